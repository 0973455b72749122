//! `cf-mock-llm`: runs the mock Anthropic server as its own process, for benchmarks of
//! the CLI. Prints its base URL on the first line of stdout, then serves until
//! interrupted (Ctrl-C or SIGTERM).
//!
//! ```text
//! cf-mock-llm [--port N] [--latency-ms N] [--fault-rate P] [--seed N] [--record]
//!             [--delta-chars N] [--pace-ms N] [--chunk-bytes N]
//! ```

use cf_mock_llm::{FaultMix, MockConfig, MockServer};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str =
    "usage: cf-mock-llm [--port N] [--latency-ms N] [--fault-rate P] [--seed N] [--record]
                   [--delta-chars N] [--pace-ms N] [--chunk-bytes N]

  --port N         port on 127.0.0.1 (default 0: any free port)
  --latency-ms N   delay before every response, in milliseconds (default 0)
  --fault-rate P   probability in [0, 1] of a random transient fault (default 0)
  --seed N         seed of the random faults (default 1)
  --record         keep every request in memory (default off: memory stays flat)
  --delta-chars N  characters per delta of a streamed answer (default 16; 0: one per block)
  --pace-ms N      pause between two events of a streamed answer (default 0)
  --chunk-bytes N  cut streamed bodies into chunks of 1 to N bytes, seeded by --seed
                   (default 0: one chunk per event)

Prints the base URL (http://127.0.0.1:PORT) on stdout, then serves until interrupted.";

fn parse_args(args: impl Iterator<Item = String>) -> Result<MockConfig, String> {
    let mut config = MockConfig::for_load(Duration::ZERO);
    let mut fault_rate = 0.0f64;
    let mut seed = 1u64;
    let mut args = args;
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => {
                config.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--latency-ms" => {
                let ms: u64 = value("--latency-ms")?
                    .parse()
                    .map_err(|e| format!("--latency-ms: {e}"))?;
                config.latency = Duration::from_millis(ms);
            }
            "--fault-rate" => {
                fault_rate = value("--fault-rate")?
                    .parse()
                    .map_err(|e| format!("--fault-rate: {e}"))?;
                if !(0.0..=1.0).contains(&fault_rate) {
                    return Err(format!("--fault-rate {fault_rate} is outside [0, 1]"));
                }
            }
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--record" => config.record = true,
            "--delta-chars" => {
                config.stream.delta_chars = value("--delta-chars")?
                    .parse()
                    .map_err(|e| format!("--delta-chars: {e}"))?
            }
            "--pace-ms" => {
                let ms: u64 = value("--pace-ms")?
                    .parse()
                    .map_err(|e| format!("--pace-ms: {e}"))?;
                config.stream.pace = Duration::from_millis(ms);
            }
            "--chunk-bytes" => {
                config.stream.chunk_bytes = value("--chunk-bytes")?
                    .parse()
                    .map_err(|e| format!("--chunk-bytes: {e}"))?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.stream.chunk_bytes > 0 {
        config.stream.chunk_seed = Some(seed);
    }
    if fault_rate > 0.0 {
        config.fault_mix = Some(FaultMix {
            probability: fault_rate,
            seed,
        });
    }
    Ok(config)
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cf-mock-llm: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cf-mock-llm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match MockServer::start(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("cf-mock-llm: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", server.base_url());
        let _ = out.flush();
        drop(out);
        interrupted().await;
        eprintln!(
            "cf-mock-llm: {} requests, at most {} at once",
            server.requests(),
            server.max_in_flight()
        );
        server.stop().await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let c = parse_args(args(
            "--port 8080 --latency-ms 100 --fault-rate 0.1 --seed 9",
        ))
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.latency, Duration::from_millis(100));
        assert_eq!(
            c.fault_mix,
            Some(FaultMix {
                probability: 0.1,
                seed: 9
            })
        );
        assert!(!c.record);
        let c = parse_args(args(
            "--delta-chars 2 --pace-ms 50 --chunk-bytes 5 --seed 3",
        ))
        .unwrap();
        assert_eq!(c.stream.delta_chars, 2);
        assert_eq!(c.stream.pace, Duration::from_millis(50));
        assert_eq!((c.stream.chunk_bytes, c.stream.chunk_seed), (5, Some(3)));
        assert!(parse_args(args("--pace-ms soon")).is_err());
        assert!(parse_args(args("--fault-rate 2")).is_err());
        assert!(parse_args(args("--port")).is_err());
        assert!(parse_args(args("--bogus")).is_err());
    }
}
