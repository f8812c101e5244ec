//! One function per operator command that does more than list.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Client, escape, pretty_json, read_pipeline, render_job, segment};

/// Prints a job; with `watch`, follows its event stream (`GET /jobs/{job}/events`) and prints
/// it again after every change until it ends. Where no stream opens (a replica at its limit,
/// or one that has no stream), it polls every half second instead.
pub async fn show_job(client: &Client, id: &str, watch: bool) -> anyhow::Result<()> {
    let (job, mut ended) = client.job(id).await?;
    let mut last = render_job(&job);
    print!("{last}");
    let mut show = |job: &Value| {
        let view = render_job(job);
        if view != last {
            println!("---");
            print!("{view}");
            last = view;
        }
    };
    while watch && !ended {
        // A stream that breaks (a replica restarting, a proxy timing out) is opened again: it
        // starts with the job's status, so nothing is missed but the moments in between.
        if let Ok(mut stream) = client
            .stream(&format!("/jobs/{}/events", segment(id)))
            .await
        {
            let mut buffer = String::new();
            while let Some(chunk) = next_chunk(&mut stream).await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if take_events(&mut buffer) {
                    show(&client.job(id).await?.0);
                }
            }
        }
        let job;
        (job, ended) = client.job(id).await?;
        show(&job);
        if !ended {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// The next piece of an event stream; `None` when it ended, broke, or was silent for longer
/// than three keep-alives.
async fn next_chunk(stream: &mut reqwest::Response) -> Option<Vec<u8>> {
    match tokio::time::timeout(Duration::from_secs(45), stream.chunk()).await {
        Ok(Ok(Some(chunk))) => Some(chunk.to_vec()),
        _ => None,
    }
}

/// Drops the whole events at the front of `buffer`; whether one of them was an event (not a
/// keep-alive comment).
fn take_events(buffer: &mut String) -> bool {
    let mut any = false;
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        any |= block.lines().any(|l| l.starts_with("event:"));
    }
    any
}

/// Aborts a job and waits (at most a minute) for it to reach history, then prints it.
pub async fn abort(client: &Client, id: &str) -> anyhow::Result<()> {
    let body = json!({"status": "aborted"});
    let path = format!("/jobs/{}", segment(id));
    let (_, answer) = client
        .call(reqwest::Method::POST, &path, Some(&body))
        .await?;
    let status = answer["status"].as_str().unwrap_or("?");
    eprint!("aborting {} ({})", escape(id), escape(status));
    let started = Instant::now();
    loop {
        match client.get(&format!("/history/{}", segment(id))).await {
            Ok(job) => {
                eprintln!(" done");
                print!("{}", render_job(&job));
                return Ok(());
            }
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                eprint!(".");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => bail!("the job did not reach history within 60 s: {error}"),
        }
    }
}

/// Pauses or resumes a job and prints its status after.
pub async fn set_status(client: &Client, id: &str, status: &str) -> anyhow::Result<()> {
    let body = json!({"status": status});
    let path = format!("/jobs/{}", segment(id));
    let (_, answer) = client
        .call(reqwest::Method::POST, &path, Some(&body))
        .await?;
    let now = answer["status"].as_str().unwrap_or("?");
    println!("job {} is {}", escape(id), escape(now));
    Ok(())
}

/// Starts ended job `id` again from stage `from` (`POST /jobs` with the history record's file
/// and `from_stage`), and says what it reused.
pub async fn rerun(client: &Client, id: &str, from: &str, current: bool) -> anyhow::Result<()> {
    let record = client.get(&format!("/history/{}", segment(id))).await?;
    let mut body = json!({
        "hash": record["hash"], "machine_id": record["machine_id"],
        "file_name": record["file_name"], "from_stage": from,
    });
    if current {
        body["pipeline"] = json!("current");
    }
    let (_, answer) = client
        .call(reqwest::Method::POST, "/jobs", Some(&body))
        .await?;
    let started = answer["id"].as_str().unwrap_or(id);
    let run = record["run_id"].as_str().unwrap_or("?");
    let reused = match from {
        "01" => "reusing nothing".to_owned(),
        _ => format!("reusing the earlier stages of run {}", escape(run)),
    };
    println!(
        "job {} runs again from stage {}, {reused}",
        escape(started),
        escape(from)
    );
    Ok(())
}

/// Records `outputs` for a held task, which skips it, and prints how it was taken. Only a task
/// whose last attempt failed: posted for a task still running, the outputs would be its result.
pub async fn skip(client: &Client, id: &str, task_id: &str, outputs: &str) -> anyhow::Result<()> {
    let outputs: Value =
        serde_json::from_str(outputs).context("--outputs must be JSON: a list of objects")?;
    let path = format!("/jobs/{}", segment(id));
    let job = client.get(&path).await?;
    let tasks = job["current_stage"]["tasks"]
        .as_array()
        .into_iter()
        .flatten();
    let named = |t: &&Value| {
        t["task_id"] == task_id
            || t["previous_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|p| p == task_id))
    };
    match tasks
        .clone()
        .find(named)
        .map(|t| t["status"].as_str().unwrap_or("?"))
    {
        Some("failed") => {}
        Some(status) => bail!(
            "task {} is {}, not held: only a task whose last attempt failed can be skipped",
            escape(task_id),
            escape(status)
        ),
        None => bail!(
            "job {} has no task {} in its stage in flight",
            escape(id),
            escape(task_id)
        ),
    }
    let body = json!({ task_id: outputs });
    let (_, answer) = client
        .call(reqwest::Method::POST, &path, Some(&body))
        .await?;
    let outcome = answer["outcome"].as_str().unwrap_or("?");
    match answer["reason"].as_str() {
        Some(reason) => println!("task {}: {outcome} ({})", escape(task_id), escape(reason)),
        None => println!("task {}: {outcome}", escape(task_id)),
    }
    Ok(())
}

pub async fn list_pipelines(client: &Client) -> anyhow::Result<()> {
    let ids = client.get("/pipelines").await?;
    for id in ids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        println!("{}", escape(id));
    }
    Ok(())
}

/// Registers the pipeline in `file`: replaced if it names its id, else created.
pub async fn apply_pipeline(client: &Client, file: &Path) -> anyhow::Result<()> {
    let body = read_pipeline(file)?;
    let (method, path) = match body["id"].as_str() {
        Some(id) => (reqwest::Method::PUT, format!("/pipelines/{}", segment(id))),
        None => (reqwest::Method::POST, "/pipelines".to_owned()),
    };
    let (status, answer) = client.call(method, &path, Some(&body)).await?;
    let verb = if status == 201 { "created" } else { "replaced" };
    let id = answer["id"].as_str().unwrap_or("?");
    println!("{verb} pipeline {}", escape(id));
    Ok(())
}

/// Creates or updates a machine; `configs` is a JSON object.
pub async fn set_machine(
    client: &Client,
    machine_id: &str,
    pipeline: &str,
    configs: Option<&str>,
) -> anyhow::Result<()> {
    let configs: BTreeMap<String, Value> = match configs {
        Some(text) => serde_json::from_str(text).context("--configs must be a JSON object")?,
        None => BTreeMap::new(),
    };
    let body = json!({"pipeline_id": pipeline, "configs": configs});
    let path = format!("/machines/{}", segment(machine_id));
    let (status, _) = client
        .call(reqwest::Method::PUT, &path, Some(&body))
        .await?;
    let verb = if status == 201 { "created" } else { "updated" };
    let (machine_id, pipeline) = (escape(machine_id), escape(pipeline));
    println!("{verb} machine {machine_id} → pipeline {pipeline}");
    Ok(())
}

pub async fn show_machine(client: &Client, machine_id: &str) -> anyhow::Result<()> {
    let path = format!("/machines/{}", segment(machine_id));
    let machine = client.get(&path).await?;
    println!("{}", pretty_json(&machine));
    Ok(())
}
