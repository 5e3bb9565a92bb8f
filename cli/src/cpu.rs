//! CPU time of this process, for the run's phase accounting.
//!
//! The benchmark compares tools by rows per CPU-second, so a run reports
//! where its CPU went, not only its wall time: with several threads the two
//! differ, and a phase that parallelises badly shows here first.

/// User plus system CPU seconds this process has used so far, over all its
/// threads (DuckDB's workers included).
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Wall and CPU seconds since a start point.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    wall: std::time::Instant,
    cpu: f64,
}

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Stopwatch { wall: std::time::Instant::now(), cpu: process_cpu_seconds() }
    }

    /// Wall seconds since the start.
    pub fn wall(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    /// CPU seconds of the whole process since the start.
    pub fn cpu(&self) -> f64 {
        process_cpu_seconds() - self.cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's own CPU seconds: unlike wall time, it only advances
    /// while the thread runs, however busy the machine is.
    fn thread_cpu_seconds() -> f64 {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the struct it is given.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) }, 0);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    }

    #[test]
    fn busy_work_shows_as_cpu_time() {
        // Other tests may run in this process at the same time, so only a
        // lower bound holds: this thread's own spinning. It spins on its own
        // CPU clock, not on wall time, so that a loaded machine that
        // preempts it cannot make it spin for less.
        let watch = Stopwatch::start();
        let spun_from = thread_cpu_seconds();
        let mut x = 0u64;
        while thread_cpu_seconds() - spun_from < 0.06 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        // getrusage rounds to the scheduler's accounting; allow 10 ms.
        assert!(watch.cpu() >= 0.05, "spinning for 60 CPU ms showed as only {} CPU seconds", watch.cpu());
        // A thread's CPU time cannot outrun the wall clock.
        assert!(watch.wall() >= 0.06, "60 CPU ms of one thread took only {} wall seconds", watch.wall());
    }
}
