//! A guest that does what the task's first word says, to test the host's limits.
//! Each behaviour comes in an obeying and a violating size where a limit exists.
//!
//! | task                | behaviour                                                   |
//! |---------------------|-------------------------------------------------------------|
//! | `echo`              | one model call, returns its text (a normal agent)            |
//! | `loop`              | computes forever                                             |
//! | `spin MS`           | computes for MS milliseconds, then returns                   |
//! | `alloc MIB`         | allocates and touches MIB mebibytes, then returns            |
//! | `membomb`           | allocates until something stops it                          |
//! | `escape ADDR`       | tries files, environment, arguments and a TCP connection     |
//! | `panic`             | panics                                                       |
//! | `recurse`           | recurses without bound                                       |
//! | `output BYTES`      | returns an output of BYTES bytes                             |
//! | `metadata N`        | returns an empty text with N empty metadata pairs            |
//! | `messages N`        | one model call carrying N one-byte messages                  |
//! | `llm-loop N`        | calls the model N times, reports successes and the last error|
//! | `llm-mode M TEXT`   | one model call with response-cache mode M                    |
//! | `llm-debug …`       | one model call; returns the whole result as Debug text       |
//! | `print BYTES`       | writes BYTES bytes to stdout, then returns                   |
//! | `log N`             | writes N log records                                         |
//! | `cache-keys`        | tries hostile keys against its cache                         |
//! | `cache-put K V`     | stores V under K                                             |
//! | `cache-get K`       | reads K                                                      |

use cf_agent_sdk::{
    Agent, AgentError, AgentInfo, AgentOutput, Task, cache, export_agent, llm, log,
};
use std::fmt::Write as _;
use std::hint::black_box;

struct Hostile;

fn arg<T: std::str::FromStr>(words: &[&str], i: usize) -> Result<T, AgentError> {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| AgentError::InvalidTask(format!("argument {i} missing or invalid")))
}

fn ok(text: String) -> Result<AgentOutput, AgentError> {
    Ok(AgentOutput {
        text,
        metadata: vec![],
    })
}

impl Agent for Hostile {
    fn describe() -> AgentInfo {
        cf_agent_sdk::info(
            "hostile",
            "0.1.0",
            "Misbehaves on purpose, for the host's tests.",
        )
    }

    fn run(task: Task) -> Result<AgentOutput, AgentError> {
        let words: Vec<&str> = task.text.split_whitespace().collect();
        match words.first().copied().unwrap_or("") {
            "echo" => ok(llm::Request::new().user(task.text.clone()).send()?.text),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "spin" => {
                let ms: u64 = arg(&words, 1)?;
                let start = std::time::Instant::now();
                let mut n: u64 = 0;
                while start.elapsed().as_millis() < u128::from(ms) {
                    n = black_box(n.wrapping_add(1));
                }
                ok(format!("spun {ms} ms"))
            }
            "alloc" => {
                let mib: usize = arg(&words, 1)?;
                let v = black_box(vec![7u8; mib << 20]);
                ok(format!("allocated {} MiB", v.len() >> 20))
            }
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "escape" => ok(escape(words.get(1).copied().unwrap_or("127.0.0.1:9"))),
            "panic" => panic!("the hostile guest panics on purpose"),
            "recurse" => ok(format!("{}", recurse(black_box(1)))),
            "output" => {
                let bytes: usize = arg(&words, 1)?;
                ok("x".repeat(bytes))
            }
            "metadata" => {
                let n: usize = arg(&words, 1)?;
                Ok(AgentOutput {
                    text: String::new(),
                    metadata: vec![(String::new(), String::new()); n],
                })
            }
            "messages" => {
                let n: usize = arg(&words, 1)?;
                let mut request = llm::Request::new();
                for _ in 0..n {
                    request = request.user("x");
                }
                ok(match request.send() {
                    Ok(_) => "sent".to_owned(),
                    Err(e) => format!("refused: {e:?}"),
                })
            }
            "llm-loop" => {
                let n: u32 = arg(&words, 1)?;
                let (mut good, mut last_error) = (0, String::from("none"));
                for i in 0..n {
                    match llm::Request::new()
                        .user(format!("call {i}"))
                        .max_tokens(16)
                        .send()
                    {
                        Ok(_) => good += 1,
                        Err(e) => last_error = format!("{e:?}"),
                    }
                }
                ok(format!("ok={good} last_error={last_error}"))
            }
            "llm-mode" => {
                // `llm-mode MODE TEXT…`: one call with the given response-cache mode.
                let mode = match words.get(1).copied() {
                    Some("normal") => llm::CacheMode::Normal,
                    Some("bypass") => llm::CacheMode::Bypass,
                    Some("refresh") => llm::CacheMode::Refresh,
                    Some("read-only") => llm::CacheMode::ReadOnly,
                    other => {
                        return Err(AgentError::InvalidTask(format!(
                            "unknown cache mode {other:?}"
                        )));
                    }
                };
                let answer = llm::Request::new()
                    .user(words[2..].join(" "))
                    .cache(mode)
                    .send()?;
                Ok(AgentOutput {
                    text: answer.text,
                    metadata: vec![("cached".into(), answer.cached.to_string())],
                })
            }
            "llm-debug" => {
                // Everything the host returns for one call, as the guest sees it.
                let result = llm::Request::new().user(task.text.clone()).send();
                ok(format!("{result:?}"))
            }
            "print" => {
                let bytes: usize = arg(&words, 1)?;
                let line = "p".repeat(99);
                for _ in 0..bytes / 100 {
                    println!("{line}");
                }
                ok(format!("printed {bytes}"))
            }
            "log" => {
                let n: u32 = arg(&words, 1)?;
                for i in 0..n {
                    log::info(&format!("record {i}"));
                }
                ok(format!("logged {n}"))
            }
            "cache-flood" => {
                // `cache-flood N`: N store operations as fast as it can, errors ignored.
                let n: u32 = arg(&words, 1)?;
                let (mut good, mut bad, mut last_error) = (0u32, 0u32, String::from("none"));
                for i in 0..n {
                    let key = format!("k{}", i % 64);
                    let result = if i % 2 == 0 {
                        cache::set(&key, b"v", None)
                    } else {
                        cache::get(&key).map(|_| ())
                    };
                    match result {
                        Ok(()) => good += 1,
                        Err(e) => {
                            bad += 1;
                            last_error = e.to_string();
                        }
                    }
                }
                ok(format!("ok={good} err={bad} last_error={last_error}"))
            }
            "big-call" => {
                // `big-call llm|cache|log MIB`: one host call carrying a MIB-MiB string.
                let mib: usize = arg(&words, 2)?;
                let big = "x".repeat(mib << 20);
                let result = match words.get(1).copied() {
                    Some("llm") => llm::Request::new()
                        .user(big)
                        .send()
                        .map(|_| "sent".to_owned())
                        .map_err(|e| format!("{e:?}")),
                    Some("cache") => cache::set("big", big.as_bytes(), None)
                        .map(|()| "stored".to_owned())
                        .map_err(|e| format!("{e:?}")),
                    Some("log") => {
                        log::warn(&big);
                        Ok("logged".to_owned())
                    }
                    other => {
                        return Err(AgentError::InvalidTask(format!(
                            "unknown host call {other:?}"
                        )));
                    }
                };
                ok(match result {
                    Ok(m) => m,
                    Err(e) => format!("refused: {e}"),
                })
            }
            "cache-keys" => ok(cache_keys()),
            "cache-put" => {
                let (k, v) = (
                    words.get(1).copied().unwrap_or(""),
                    words.get(2).copied().unwrap_or(""),
                );
                cache::set(k, v.as_bytes(), None).map_err(|e| AgentError::Failed(e.to_string()))?;
                ok("stored".into())
            }
            "cache-get" => {
                let k = words.get(1).copied().unwrap_or("");
                let v = cache::get_string(k).map_err(|e| AgentError::Failed(e.to_string()))?;
                ok(v.unwrap_or_else(|| "<absent>".into()))
            }
            other => Err(AgentError::InvalidTask(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

#[expect(unconditional_recursion, reason = "the point: a stack overflow")]
fn recurse(depth: u64) -> u64 {
    // Only wasm locals: this exhausts the engine's call stack, not the shadow stack
    // in linear memory.
    black_box(recurse(black_box(depth + 1))) ^ depth
}

/// Everything a sandbox escape would try; one `name: result` line each.
fn escape(addr: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "read /etc/passwd: {}",
        verdict(std::fs::read("/etc/passwd").map(|b| b.len()))
    );
    let _ = writeln!(
        out,
        "read ./Cargo.toml: {}",
        verdict(std::fs::read("Cargo.toml").map(|b| b.len()))
    );
    let _ = writeln!(
        out,
        "create /tmp/cf-escape: {}",
        verdict(std::fs::write("/tmp/cf-escape", b"x"))
    );
    let _ = writeln!(
        out,
        "list /: {}",
        verdict(std::fs::read_dir("/").map(|d| d.count()))
    );
    let _ = writeln!(out, "env vars: {}", std::env::vars().count());
    let _ = writeln!(
        out,
        "env ANTHROPIC_API_KEY: {}",
        verdict(std::env::var("ANTHROPIC_API_KEY"))
    );
    let _ = writeln!(
        out,
        "env CF_CACHE_SECRET: {}",
        verdict(std::env::var("CF_CACHE_SECRET"))
    );
    let _ = writeln!(out, "args: {}", std::env::args().count());
    let _ = writeln!(out, "cwd: {}", verdict(std::env::current_dir()));
    let _ = writeln!(
        out,
        "tcp {addr}: {}",
        verdict(std::net::TcpStream::connect(addr))
    );
    let _ = writeln!(
        out,
        "udp bind: {}",
        verdict(std::net::UdpSocket::bind("127.0.0.1:0"))
    );
    let _ = writeln!(
        out,
        "dns localhost: {}",
        verdict(std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)).map(|a| a.count()))
    );
    out
}

fn verdict<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => format!("GRANTED {v:?}"),
        Err(e) => format!("denied ({e})"),
    }
}

/// Tries keys that would name paths if the host built paths from them.
fn cache_keys() -> String {
    let long = "k".repeat(10_000);
    let keys = [
        "../escape",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        "nul\0byte",
        "\u{202e}rtl",
        "con",
        "ok-key",
        long.as_str(),
        "",
    ];
    let mut out = String::new();
    for k in keys {
        let shown: String = k.chars().take(20).collect();
        let set = cache::set(k, b"v", None);
        let get = cache::get(k);
        let _ = writeln!(
            out,
            "{shown:?}: set={} get={}",
            set.map_or_else(
                |e| format!("{e:?}").split('(').next().unwrap_or("").to_owned(),
                |_| "ok".into()
            ),
            match get {
                Ok(Some(v)) => format!("{:?}", String::from_utf8_lossy(&v)),
                Ok(None) => "absent".into(),
                Err(e) => format!("{e:?}").split('(').next().unwrap_or("").to_owned(),
            }
        );
    }
    out
}

export_agent!(Hostile);
