//! CPU time of processes, from /proc: what a saga costs the server (and the load generator),
//! which unlike throughput does not drift with whatever else the machine is doing.

/// /proc reports times in USER_HZ ticks, 100 per second on Linux whatever the kernel's HZ.
const TICK_MS: f64 = 10.0;

/// User plus system CPU time of `pid` so far, in ticks; `None` when it cannot be read.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11); // fields 14 and 15
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// CPU used by a set of processes between two readings.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Vec<Option<u64>>,
}

impl CpuMeter {
    /// Starts measuring `pids` now.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: pids.iter().map(|p| ticks(*p)).collect(),
        }
    }

    /// Milliseconds of CPU per unit of work since the start (`None` when a process could
    /// not be read or nothing was done).
    pub fn ms_per(&self, done: u64) -> Option<f64> {
        if self.pids.is_empty() || done == 0 {
            return None;
        }
        let mut used = 0;
        for (pid, start) in self.pids.iter().zip(&self.start) {
            used += ticks(*pid)?.checked_sub((*start)?)?;
        }
        Some(used as f64 * TICK_MS / done as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let me = std::process::id();
        let meter = CpuMeter::start(&[me]);
        let mut x = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(60);
        while std::time::Instant::now() < deadline {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        let ms = meter.ms_per(1).expect("readable");
        assert!(ms >= 10.0, "spent {ms} ms");
        assert_eq!(CpuMeter::start(&[]).ms_per(1), None);
    }
}
