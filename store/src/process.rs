//! Who a process is, precisely enough that another process on the same
//! machine can tell whether it is still running.
//!
//! A heartbeat timeout is the only sign of death between hosts. On one host
//! there is a faster and surer one: the process is gone. But a pid alone
//! proves little: two containers can share a host name while each has its
//! own pid namespace (pid 7 here is not pid 7 there), and a pid is reused
//! once its process has exited. So an executor records its pid *space* (the
//! boot id and the pid namespace it runs in) and its start time, and a
//! sweeper reads `/proc` only for executors of its own space, comparing the
//! start time so that a reused pid is not taken for the executor.

use std::path::Path;

/// A process as another process on the same machine can check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// `<boot id>/<pid namespace>`: processes with equal spaces see the
    /// same pids in the same `/proc`.
    pub space: String,
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: i64,
}

impl ProcessIdentity {
    /// This process, or `None` where it cannot be told reliably (not Linux,
    /// no `/proc`, or a `/proc` mounted for another pid namespace than the
    /// one this process runs in).
    pub fn current() -> Option<ProcessIdentity> {
        let pid = std::process::id() as i32;
        let space = current_space()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // `/proc/self` resolves in the namespace `/proc` was mounted for;
        // only if it names this very pid do pids read there mean ours.
        if stat.split_whitespace().next()?.parse::<i32>().ok()? != pid {
            return None;
        }
        Some(ProcessIdentity {
            space,
            pid,
            start: start_time(&stat)?,
        })
    }

    /// `Some(false)` when the process is certainly gone (no such pid, or the
    /// pid now belongs to a process that started at another time); `None`
    /// when this process cannot tell (another machine or pid namespace).
    pub fn alive(&self) -> Option<bool> {
        if current_space().as_deref() != Some(self.space.as_str()) || self.pid <= 0 {
            return None;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => Some(start_time(&stat) == Some(self.start)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }
}

/// `<boot id>/<pid namespace>` of this process.
pub fn current_space() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link(Path::new("/proc/self/ns/pid")).ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses, so fields are counted
/// from the last `)`.
fn start_time(stat: &str) -> Option<i64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (the state); field 22 is the 20th of it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let Some(me) = ProcessIdentity::current() else {
            return; // not Linux: only heartbeats count there
        };
        assert_eq!(me.alive(), Some(true));
        let reused = ProcessIdentity {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.alive(), Some(false), "same pid, another process");
        let elsewhere = ProcessIdentity {
            space: "another-boot/pid:[1]".into(),
            ..me.clone()
        };
        assert_eq!(elsewhere.alive(), None, "another namespace: cannot tell");
    }

    #[test]
    fn a_process_that_exited_is_gone() {
        if ProcessIdentity::current().is_none() {
            return;
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        child.wait().unwrap();
        let gone = ProcessIdentity {
            space: current_space().unwrap(),
            pid,
            start: stat.as_deref().and_then(start_time).unwrap_or(0),
        };
        assert_eq!(gone.alive(), Some(false));
    }

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1234 56";
        assert_eq!(start_time(line), Some(98765));
    }
}
