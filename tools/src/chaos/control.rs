//! Operators at work during the chaos: some jobs are paused through one replica and resumed
//! through another a moment later, whatever fault is under way. Every one must still finish
//! with exactly the outputs it would have had.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::cluster::Run;

/// What became of one pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// Paused, then resumed.
    Resumed,
    /// The job had ended before the pause reached it.
    Late,
    /// The resume answered that the job had ended: an earlier try of it that timed out (a 503
    /// while a server was slow) went through after all, and the job ran on to its end. A
    /// resume that never went through would leave the job paused, and the run stuck.
    EndedBeforeResume,
}

/// How long a paused job stays paused.
const PAUSED_FOR: Duration = Duration::from_millis(1500);

/// Pauses job `id` through replica `n + 1` as soon as it started (a seed-shaped job takes
/// less than a second), then resumes it through
/// replica `n + 2` (each call goes on to the next replica while one does not answer).
pub async fn pause_and_resume(run: Arc<Run>, id: String, n: usize) -> anyhow::Result<Paused> {
    let path = format!("/jobs/{id}");
    let pause = json!({"status": "paused"});
    let (status, text) = run
        .call(n + 1, reqwest::Method::POST, &path, Some(&pause))
        .await?;
    match status {
        202 => {}
        409 => return Ok(Paused::Late),
        _ => bail!("pausing job {id}: {status} {text}"),
    }
    tokio::time::sleep(PAUSED_FOR).await;
    let resume = json!({"status": "running"});
    let (status, text) = run
        .call(n + 2, reqwest::Method::POST, &path, Some(&resume))
        .await?;
    // The answer's status is the job's after the resume: `finished` when the results that
    // came in while it was paused completed its last stage.
    match status {
        202 => Ok(Paused::Resumed),
        409 => Ok(Paused::EndedBeforeResume),
        _ => bail!("resuming job {id}: {status} {text}"),
    }
}
