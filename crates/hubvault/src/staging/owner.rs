//! Which process owns a run's journal, so that a sweep on the same machine can tell at once that
//! the owner is gone (killed) instead of waiting for its lease to lapse.
//!
//! The owner is recorded as the host name, the machine (boot id and pid namespace: two
//! containers sharing a host name do not share pids), the pid and the process's start time (so
//! a pid reused by another process does not pass for the owner). Linux only (`/proc`); elsewhere
//! nothing is recorded and sweeps fall back to the heartbeat and the lease.
//!
//! Must not: call a process gone unless this machine's `/proc` says so.

use serde::{Deserialize, Serialize};

/// A run's owning process. No secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    /// `<boot id>/<pid namespace>`: pids are comparable only within one.
    pub machine: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub started: u64,
}

impl Owner {
    /// This process, when `/proc` tells enough.
    pub fn this() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            host: host()?,
            machine: machine()?,
            pid,
            started: process_start(pid)?.0,
        })
    }

    /// Whether the owner is known to be gone: it ran on this machine and its process has ended
    /// (no such pid, a zombie, or another process under its pid). `false` when it is alive or
    /// when this machine cannot tell (another host, or no `/proc`).
    pub fn known_gone(&self) -> bool {
        let Some(me) = Owner::this() else {
            return false;
        };
        if me.host != self.host || me.machine != self.machine {
            return false;
        }
        match process_start(self.pid) {
            None => std::path::Path::new("/proc/self/stat").exists(),
            Some((started, state)) => started != self.started || state == 'Z' || state == 'X',
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn host() -> Option<String> {
    read_trimmed("/proc/sys/kernel/hostname")
}

fn machine() -> Option<String> {
    let boot = read_trimmed("/proc/sys/kernel/random/boot_id")?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{boot}/{}", ns.display()))
}

/// A process's start time (ticks since boot) and state letter, from `/proc/<pid>/stat`.
fn process_start(pid: u32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')?.checked_add(1)?..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; the start time is field 22, 19 further on.
    let started = fields.nth(18)?.parse().ok()?;
    Some((started, state))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_alive_and_a_dead_child_is_gone() {
        let me = Owner::this().unwrap();
        assert!(!me.known_gone(), "{me:?}");
        // A pid reused by a later process is not the owner.
        let reused = Owner {
            started: me.started.wrapping_add(1),
            ..me.clone()
        };
        assert!(reused.known_gone());
        // Another machine cannot be judged from here.
        let elsewhere = Owner {
            host: "another-host".into(),
            started: 0,
            ..me.clone()
        };
        assert!(!elsewhere.known_gone());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = process_start(pid).map_or(0, |(s, _)| s);
        child.wait().unwrap();
        let gone = Owner { pid, started, ..me };
        assert!(gone.known_gone(), "a reaped child is gone");
    }
}
