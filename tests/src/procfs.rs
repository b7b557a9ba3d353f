//! What the benchmarks read of a process from `/proc`: its CPU time and
//! its memory.

use anyhow::Context as _;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time a process has used, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTime {
    /// Time in user space.
    pub user: f64,
    /// Time in the kernel on the process's behalf.
    pub system: f64,
}

impl CpuTime {
    /// User plus system time.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// The CPU time used between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// The CPU time process `pid` has used so far (`utime` and `stime`).
///
/// # Errors
/// When the process is gone or its stat line cannot be read.
pub fn cpu_time(pid: u32) -> anyhow::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).with_context(|| format!("reading CPU times from /proc/{pid}/stat"))
}

/// `utime` and `stime` of a stat line. They are fields 14 and 15; the
/// command name before them is in parentheses and may hold spaces.
fn parse_stat(stat: &str) -> Option<CpuTime> {
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(CpuTime {
        user: ticks(11)? as f64 / TICKS_PER_SECOND,
        system: ticks(12)? as f64 / TICKS_PER_SECOND,
    })
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmHWM:` (peak RSS).
///
/// # Errors
/// When the process is gone or has no such field.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_past_a_name_with_spaces() {
        let line = "42 (capstan (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 3 0 9 0";
        assert_eq!(
            parse_stat(line),
            Some(CpuTime {
                user: 1.5,
                system: 0.25
            })
        );
        assert_eq!(parse_stat("42 (short) S 1"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmHWM:").expect("VmHWM") > 0);
        assert!(cpu_time(pid).expect("stat").total() >= 0.0);
    }
}
