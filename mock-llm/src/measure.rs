//! Measurements for benchmarks that run a client and this server in one process:
//! CPU time per named thread group, and memory.

/// Linux's USER_HZ, the unit of `utime` and `stime` in /proc (100 on every mainstream
/// architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) used so far by this process's threads named `name`
/// (tokio's `thread_name`), from `/proc/self/task/*/stat`; 10 ms resolution. NaN
/// where /proc is unavailable.
pub fn cpu_seconds_of(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at `state`;
        // utime and stime are the 12th and 13th of them.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// A `kB` field of /proc/self/status (`"VmHWM:"` peak RSS, `"VmRSS:"` current), in
/// MiB; NaN where unavailable.
pub fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
