//! `job-manager bench`: measurements that print figures. Speed and memory targets live here,
//! never in timed tests.

pub mod queries;

use clap::Subcommand;

/// What to measure.
#[derive(Debug, Clone, Subcommand)]
pub enum Bench {
    /// Listing jobs over a large history: first-page latency and memory while streaming.
    Queries(queries::QueryBenchArgs),
}

/// Runs the chosen benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Queries(args) => queries::run(args).await,
    }
}

/// The resident set size of this process, in KiB (0 where `/proc` is missing).
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// The peak resident set size of this process, in KiB.
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The `q`-quantile (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut samples = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut samples, 0.5), 3.0);
        assert_eq!(quantile(&mut samples, 0.0), 1.0);
        assert_eq!(quantile(&mut samples, 1.0), 5.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn rss_is_read_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib() > 0);
            assert!(peak_rss_kib() >= rss_kib());
        }
    }
}
