//! One function per operator command that does more than list.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Client, escape, pretty_json, read_pipeline, render_job, segment};

/// Prints a job; with `watch`, prints it again on every change until it ends.
pub async fn show_job(client: &Client, id: &str, watch: bool) -> anyhow::Result<()> {
    let (mut job, mut ended) = client.job(id).await?;
    print!("{}", render_job(&job));
    let mut last = render_job(&job);
    while watch && !ended {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (job, ended) = client.job(id).await?;
        let view = render_job(&job);
        if view != last {
            println!("---");
            print!("{view}");
            last = view;
        }
    }
    Ok(())
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

/// Records `outputs` for a held task, which skips it, and prints how it was taken.
pub async fn skip(client: &Client, id: &str, task_id: &str, outputs: &str) -> anyhow::Result<()> {
    let outputs: Value =
        serde_json::from_str(outputs).context("--outputs must be JSON: a list of objects")?;
    let body = json!({ task_id: outputs });
    let path = format!("/jobs/{}", segment(id));
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
