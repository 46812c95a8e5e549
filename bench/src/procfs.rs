//! CPU time and memory of a contender from `/proc`, summed over its process
//! tree: websockify and socat fork a child per connection, porthole-proxy
//! does not.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The fields of `/proc/PID/stat` the bench uses. Times are in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// Children's times, once the process has waited for them.
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may hold
/// spaces and parentheses itself, so the fields after it are found from the
/// *last* `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    // Field 3 (state) is index 0 here; field N is index N - 3.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// `VmRSS` and `VmHWM` (peak RSS) from `/proc/PID/status`, in KiB, and the
/// context switches (of the one thread whose status it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub switches: u64,
}

/// Reads a `Key:   1234 kB` (or `Key:  1234`) line's number.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Parses `/proc/PID/status`; kernel threads have no `Vm*` lines and read as 0.
pub fn parse_status(text: &str) -> Memory {
    Memory {
        rss_kib: kib_field(text, "VmRSS").unwrap_or(0),
        hwm_kib: kib_field(text, "VmHWM").unwrap_or(0),
        switches: kib_field(text, "voluntary_ctxt_switches").unwrap_or(0)
            + kib_field(text, "nonvoluntary_ctxt_switches").unwrap_or(0),
    }
}

/// `Pss` from `/proc/PID/smaps_rollup`: the resident set with shared pages
/// divided among the processes sharing them (forked children share most).
pub fn parse_pss(text: &str) -> Option<u64> {
    kib_field(text, "Pss")
}

/// The pids of `root` and all its descendants, from a list of `(pid, ppid)`.
pub fn tree(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(
            parents
                .iter()
                .filter(|&&(pid, ppid)| ppid == parent && pid != parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    members
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process's `(pid, ppid)`.
fn all_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(pid).map(|s| (s.pid, s.ppid)))
        .collect()
}

/// A contender's process tree at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Processes in the tree (the contender and its live children).
    pub processes: usize,
    /// User CPU seconds: the live processes' own and their reaped children's.
    pub user_s: f64,
    /// System CPU seconds, likewise.
    pub sys_s: f64,
    /// Sum of the processes' VmRSS.
    pub rss_kib: u64,
    /// Sum of the processes' VmHWM (each one's peak RSS so far).
    pub hwm_kib: u64,
    /// Sum of the processes' Pss.
    pub pss_kib: u64,
    /// Context switches of all their live threads so far.
    #[serde(default)]
    pub switches: u64,
}

impl Usage {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// Reads the tree under `root` now.
    pub fn of_tree(root: u32, ticks_per_second: f64) -> Self {
        let mut usage = Usage::default();
        for pid in tree(root, &all_parents()) {
            let Some(stat) = read_stat(pid) else {
                continue;
            };
            usage.processes += 1;
            usage.user_s += (stat.utime + stat.cutime) as f64 / ticks_per_second;
            usage.sys_s += (stat.stime + stat.cstime) as f64 / ticks_per_second;
            if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
                let memory = parse_status(&status);
                usage.rss_kib += memory.rss_kib;
                usage.hwm_kib += memory.hwm_kib;
            }
            if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    if let Ok(status) = fs::read_to_string(task.path().join("status")) {
                        usage.switches += parse_status(&status).switches;
                    }
                }
            }
            if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                usage.pss_kib += parse_pss(&rollup).unwrap_or(0);
            }
        }
        usage
    }

    /// The pids in the tree under `root` now.
    pub fn pids(root: u32) -> Vec<u32> {
        tree(root, &all_parents())
            .into_iter()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect()
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when unsure.
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (python3 (ws) x) S 4000 4242 4000 0 -1 4194560 2714 0 0 0 \
                        137 42 5 3 20 0 1 0 123456 31457280 9000 18446744073709551615 \
                        1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_with_parentheses_in_the_name() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                pid: 4242,
                comm: "python3 (ws) x".into(),
                state: 'S',
                ppid: 4000,
                utime: 137,
                stime: 42,
                cutime: 5,
                cstime: 3,
            })
        );
    }

    #[test]
    fn truncated_stat_is_refused() {
        assert_eq!(parse_stat("1 (init) S 0 1 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_memory_lines() {
        let status = "Name:\tporthole-proxy\nVmPeak:\t  20000 kB\nVmHWM:\t    6144 kB\n\
                      VmRSS:\t    5120 kB\nRssAnon:\t 1000 kB\n\
                      voluntary_ctxt_switches:\t30\nnonvoluntary_ctxt_switches:\t4\n";
        assert_eq!(
            parse_status(status),
            Memory {
                rss_kib: 5120,
                hwm_kib: 6144,
                switches: 34,
            }
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), Memory::default());
    }

    #[test]
    fn pss_from_smaps_rollup() {
        let rollup = "5583b000-7ffd r--p 00000000 00:00 0  [rollup]\nRss:   9000 kB\n\
                      Pss:    4321 kB\nPss_Anon:  100 kB\n";
        assert_eq!(parse_pss(rollup), Some(4321));
    }

    #[test]
    fn tree_finds_grandchildren_only_under_root() {
        let parents = [(1, 0), (10, 1), (11, 10), (12, 11), (13, 1), (14, 10)];
        let mut t = tree(10, &parents);
        t.sort();
        assert_eq!(t, [10, 11, 12, 14]);
        assert_eq!(tree(99, &parents), [99]);
    }

    #[test]
    fn this_process_reads_itself() {
        let usage = Usage::of_tree(std::process::id(), ticks_per_second());
        assert!(usage.processes >= 1);
        assert!(usage.rss_kib > 0 && usage.hwm_kib >= usage.rss_kib);
    }
}
