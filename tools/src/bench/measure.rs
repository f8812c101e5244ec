//! What the benchmark reads off a process and its samples: RSS, and quantiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Samples this process's RSS in the background and keeps the peak.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(every: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(every).await;
                }
            }
        });
        Self { peak, stop, task }
    }

    /// Stops sampling; the peak in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// The resident set size of this process, in KiB (0 where `/proc` is missing).
pub fn rss_kib() -> u64 {
    status_kib("/proc/self/status", "VmRSS:")
}

/// A `kB` field of a `/proc/<pid>/status` file (0 where it is missing).
pub fn status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
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

/// The sums and counts of the service's step histogram (`job_manager_step_seconds`) in this
/// process's metrics, by step, and of its writes per store command
/// (`job_manager_writes_per_commit`) as `commit` and archives per call
/// (`job_manager_archives_per_commit`) as `archives`: in-process replicas record there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps(std::collections::BTreeMap<String, (f64, f64)>);

impl Steps {
    /// The steps as the metrics read now.
    pub fn now() -> Self {
        Self::parse(&job_manager::meter::render(None))
    }

    /// The steps in a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let mut steps = std::collections::BTreeMap::<String, (f64, f64)>::new();
        // The group commit's histograms, shown beside the steps: requests per store call.
        for (step, name) in [
            ("commit", job_manager::meter::WRITES_PER_COMMIT),
            ("archives", job_manager::meter::ARCHIVES_PER_COMMIT),
        ] {
            let sum = counter_in(text, &format!("{name}_sum"));
            let count = counter_in(text, &format!("{name}_count"));
            steps.insert(step.to_owned(), (sum, count));
        }
        // Outbox marks never written (their tasks answered first), beside the marks written.
        let skipped = counter_in(text, job_manager::meter::MARKS_SKIPPED);
        steps.insert("skipped".to_owned(), (skipped, skipped));
        let prefix = format!("{}_", job_manager::meter::STEP_SECONDS);
        for line in text.lines().filter_map(|l| l.strip_prefix(prefix.as_str())) {
            let Some((kind, rest)) = line.split_once("{step=\"") else {
                continue;
            };
            let Some((step, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let entry = steps.entry(step.to_owned()).or_default();
            match kind {
                "sum" => entry.0 = value,
                "count" => entry.1 = value,
                _ => {}
            }
        }
        Self(steps)
    }

    /// Mean milliseconds and count per step between `before` and `self`, in the order a hop
    /// takes them.
    pub fn since(&self, before: &Steps) -> String {
        let order = [
            "load", "apply", "write", "commit", "publish", "mark", "skipped", "notify", "archive",
            "archives",
        ];
        let shown: Vec<String> = order
            .iter()
            .filter_map(|step| {
                let (sum, count) = self.0.get(*step)?;
                let (sum0, count0) = before.0.get(*step).copied().unwrap_or_default();
                let count = count - count0;
                if *step == "skipped" {
                    return (count > 0.0).then(|| format!("{count:.0} marks skipped"));
                }
                if let Some(what) = [("commit", "writes"), ("archives", "archives")]
                    .iter()
                    .find_map(|(name, what)| (name == step).then_some(what))
                {
                    // Not a time: requests per store call.
                    let per = (sum - sum0) / count;
                    return (count > 0.0).then(|| format!("{per:.1} {what} per call ×{count:.0}"));
                }
                (count > 0.0)
                    .then(|| format!("{step} {:.2} ms ×{count:.0}", (sum - sum0) * 1000.0 / count))
            })
            .collect();
        if shown.is_empty() {
            "no steps recorded".to_owned()
        } else {
            shown.join(" · ")
        }
    }
}

/// The value of the series `series` (name and labels, exactly) in this process's metrics; 0 when
/// it is not there yet.
pub fn counter(series: &str) -> f64 {
    counter_in(&job_manager::meter::render(None), series)
}

fn counter_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The counters behind the replica rows: lost races and where applied events started from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Races {
    pub conflicts: f64,
    pub from_copy: f64,
    pub from_read: f64,
}

impl Races {
    pub fn now() -> Self {
        Self {
            conflicts: counter(job_manager::meter::CAS_CONFLICTS),
            from_copy: counter("job_manager_events_applied_total{from=\"copy\"}"),
            from_read: counter("job_manager_events_applied_total{from=\"read\"}"),
        }
    }

    /// "conflicts per 1,000 tasks, share of events from the replica's own copy" since `before`.
    pub fn since(&self, before: &Races, tasks: f64) -> String {
        let conflicts = self.conflicts - before.conflicts;
        let copy = self.from_copy - before.from_copy;
        let read = self.from_read - before.from_read;
        format!(
            "{:.1} compare-and-set conflicts per 1,000 tasks, {:.0}% of events from the replica's own copy",
            conflicts * 1000.0 / tasks.max(1.0),
            copy * 100.0 / (copy + read).max(1.0)
        )
    }
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

/// `"<p50> ms / <p99> ms (<n> samples)"` of `samples_ms`.
pub fn p50_p99(samples_ms: &mut [f64]) -> String {
    format!(
        "{:.1} ms / {:.1} ms ({} samples)",
        quantile(samples_ms, 0.5),
        quantile(samples_ms, 0.99),
        samples_ms.len()
    )
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod steps_tests {
    use super::Steps;

    #[test]
    fn a_counter_is_read_by_its_exact_series() {
        let text = "a_total{x=\"1\"} 3\na_total 7\na_total_more 9\n";
        assert_eq!(super::counter_in(text, "a_total"), 7.0);
        assert_eq!(super::counter_in(text, "a_total{x=\"1\"}"), 3.0);
        assert_eq!(super::counter_in(text, "b_total"), 0.0);
    }

    #[test]
    fn step_means_are_read_from_the_exposition_and_taken_between_two_readings() {
        let before = Steps::parse(
            "job_manager_step_seconds_sum{step=\"write\"} 0.010\njob_manager_step_seconds_count{step=\"write\"} 10\n",
        );
        let after = Steps::parse(
            "job_manager_step_seconds_bucket{step=\"write\",le=\"0.001\"} 3\njob_manager_step_seconds_sum{step=\"write\"} 0.030\njob_manager_step_seconds_count{step=\"write\"} 20\njob_manager_step_seconds_sum{step=\"load\"} 0.002\njob_manager_step_seconds_count{step=\"load\"} 2\n",
        );
        assert_eq!(after.since(&before), "load 1.00 ms ×2 · write 2.00 ms ×10");
        assert_eq!(before.since(&before), "no steps recorded");
    }

    #[test]
    fn marks_skipped_are_shown_beside_the_marks_written() {
        let before = Steps::parse("job_manager_marks_skipped_total 4\n");
        let after = Steps::parse(
            "job_manager_step_seconds_sum{step=\"mark\"} 0.006\njob_manager_step_seconds_count{step=\"mark\"} 2\njob_manager_marks_skipped_total 61\n",
        );
        assert_eq!(after.since(&before), "mark 3.00 ms ×2 · 57 marks skipped");
    }
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
        assert_eq!(p50_p99(&mut samples), "3.0 ms / 5.0 ms (5 samples)");
    }

    #[test]
    fn rss_is_read_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib() > 0);
        }
    }
}
