//! Host overhead, measured in release mode: `cargo bench -p cf-host-cli --bench overhead`.
//!
//! - one run of a shipped agent on the instant offline provider: fresh store,
//!   instantiate, `run`, one `llm.complete` — the host's own cost per run;
//! - loading an agent (compile cold, then from the on-disk compiled copy);
//! - the wall time of a whole `cf-host run` process with the compiled copy warm.
//!
//! Prints medians (and p10/p90) so that the machine's noise shows.

use cf_host::{Host, Task};
use std::process::Command;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let med = percentile(&samples, 0.5);
    println!(
        "{name:<48} median {:>10.1} µs   p10 {:>10.1} µs   p90 {:>10.1} µs   (n={})",
        med.as_secs_f64() * 1e6,
        percentile(&samples, 0.1).as_secs_f64() * 1e6,
        percentile(&samples, 0.9).as_secs_f64() * 1e6,
        samples.len()
    );
    med
}

fn main() {
    let cache = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Cold load: compile; then warm: a second host reads the compiled copy.
        let t = Instant::now();
        let host = Host::builder()
            .data_dir(Some(cache.path().to_path_buf()))
            .build()
            .expect("host");
        let build_host = t.elapsed();
        let t = Instant::now();
        let agent = host.load("python-expert").await.expect("load");
        let cold = t.elapsed();
        let mut warm = Vec::new();
        for _ in 0..20 {
            let h = Host::builder()
                .data_dir(Some(cache.path().to_path_buf()))
                .build()
                .expect("host");
            let t = Instant::now();
            h.load("python-expert").await.expect("load");
            warm.push(t.elapsed());
        }
        println!(
            "{:<48} {:>10.1} µs",
            "build a host (engine, pool, linker)",
            build_host.as_secs_f64() * 1e6
        );
        println!(
            "{:<48} {:>10.1} ms",
            "load python-expert, cold (compile)",
            cold.as_secs_f64() * 1e3
        );
        report("load python-expert, compiled copy on disk", warm);

        let task = Task::new("What is a decorator?");
        for _ in 0..200 {
            agent.run(task.clone()).await.expect("warm-up run");
        }
        let mut runs = Vec::with_capacity(5000);
        let mut instantiate = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            let out = agent.run(task.clone()).await.expect("run");
            runs.push(t.elapsed());
            instantiate.push(out.stats.timings.instantiate);
        }
        report("instantiate (fresh store + instance)", instantiate);
        let med = report("one run: store + instantiate + run + 1 llm call", runs);
        println!(
            "    target: median ≤ 50 µs → {}",
            if med <= Duration::from_micros(50) {
                "met"
            } else {
                "NOT met"
            }
        );
    });

    // A whole process, as a user runs it, with the compiled copy warm.
    let exe = env!("CARGO_BIN_EXE_cf-host");
    let run = || {
        let t = Instant::now();
        let out = Command::new(exe)
            .args([
                "run",
                "--provider",
                "offline",
                "python-expert",
                "What is a decorator?",
            ])
            .env("CF_DATA_DIR", cache.path())
            .output()
            .expect("cf-host runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    run();
    let samples: Vec<Duration> = (0..30).map(|_| run()).collect();
    let med = report("`cf-host run python-expert …` (warm), wall", samples);
    println!(
        "    target: median ≤ 30 ms → {}",
        if med <= Duration::from_millis(30) {
            "met"
        } else {
            "NOT met"
        }
    );
}
