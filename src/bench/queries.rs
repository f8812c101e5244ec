//! Listing over a large history: inserts N archived jobs, then measures the first page, a
//! filtered first page and the full streamed listing, with the process's RSS around each.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mongodb::bson::Document;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{quantile, rss_kib};
use crate::config::Config;
use crate::domain::{Job, JobStatus, Timestamp};

/// Options of `job-manager bench queries`.
#[derive(Debug, Clone, Args)]
pub struct QueryBenchArgs {
    /// Archived jobs to insert.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Page size of the first-page measurements.
    #[arg(long, default_value_t = 100)]
    pub page: u32,
    #[command(flatten)]
    pub endpoints: crate::config::Endpoints,
}

fn archived(n: usize, base: chrono::DateTime<chrono::Utc>) -> Job {
    let created = Timestamp::from(base + chrono::TimeDelta::milliseconds(n as i64));
    let mut job = Job::new(
        &format!("machine-{}", n % 10),
        &format!("hash-{n}"),
        &format!("file-{n}"),
        &format!("pipeline-{}", n % 3),
        Vec::new(),
        Default::default(),
        format!("run-{n}"),
        created,
    );
    job.status = if n.is_multiple_of(7) {
        JobStatus::Failed
    } else {
        JobStatus::Finished
    };
    job.completed = Some(created);
    job
}

async fn timed_get(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let response = client.get(url).send().await?.error_for_status()?;
    let body = response.bytes().await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, body.len()))
}

/// Inserts the history, measures, prints the table, and drops the database.
pub async fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut config = Config::defaults();
    config.endpoints.amqp_url = args.endpoints.amqp_url.clone();
    config.endpoints.mongodb_uri = args.endpoints.mongodb_uri.clone();
    config.database = format!("jm_bench_{id}");
    config.prefix = format!("jm-bench-{id}");
    let store =
        crate::store::Store::connect(&config.endpoints.mongodb_uri, &config.database).await?;
    store.ensure_indexes().await.context("creating indexes")?;

    let started = Instant::now();
    let base = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let history = store.database().collection::<Document>("history");
    for chunk in (0..args.jobs).collect::<Vec<_>>().chunks(5_000) {
        let documents: Vec<Document> = chunk
            .iter()
            .map(|n| {
                let mut document = mongodb::bson::to_document(&archived(*n, base))?;
                if let Some(id) = document.remove("id") {
                    document.insert("_id", id);
                }
                Ok(document)
            })
            .collect::<Result<_, mongodb::bson::ser::Error>>()?;
        history.insert_many(documents).await?;
    }
    let insert_s = started.elapsed().as_secs_f64();

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(crate::app::run(config.clone(), listener, shutdown.clone()));
    let url = format!("http://{address}{}", config.base_path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let ready = Instant::now();
    while client
        .get(format!("{url}/health/live"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The store query alone, without HTTP: what the database server itself costs.
    let mut direct = Vec::new();
    for _ in 0..20 {
        let filter = crate::store::ListFilter {
            limit: Some(args.page + 1),
            ..Default::default()
        };
        let started = Instant::now();
        let page: Vec<_> = futures::TryStreamExt::try_collect(
            store.list(crate::store::Listing::History, &filter).await?,
        )
        .await?;
        anyhow::ensure!(page.len() == args.page as usize + 1, "short page");
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let rss_before = rss_kib();
    let mut first = Vec::new();
    let mut filtered = Vec::new();
    let mut deep = Vec::new();
    for _ in 0..20 {
        first.push(
            timed_get(&client, &format!("{url}/history?limit={}", args.page))
                .await?
                .0,
        );
        filtered.push(
            timed_get(
                &client,
                &format!(
                    "{url}/history?limit={}&status=failed&machine_id=machine-3",
                    args.page
                ),
            )
            .await?
            .0,
        );
        deep.push(
            timed_get(
                &client,
                &format!(
                    "{url}/history?limit={}&until={}",
                    args.page,
                    Timestamp::from(base + chrono::TimeDelta::milliseconds(args.jobs as i64 / 2))
                ),
            )
            .await?
            .0,
        );
    }

    // The full listing, read chunk by chunk, while a sampler tracks the peak RSS.
    let peak = super::PeakRss::start(Duration::from_millis(5));
    let streaming = Instant::now();
    let mut response = client
        .get(format!("{url}/history"))
        .send()
        .await?
        .error_for_status()?;
    let (mut bytes, mut commas) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        commas += chunk.iter().filter(|b| **b == b',').count();
    }
    let stream_s = streaming.elapsed().as_secs_f64();
    let peak_kib = peak.finish().await;
    let listed = if bytes > 2 { commas + 1 } else { 0 };
    anyhow::ensure!(
        listed == args.jobs,
        "the full listing returned {listed} ids, expected {}",
        args.jobs
    );

    shutdown.cancel();
    let _ = service.await;
    let _ = store.database().drop().await;
    store.shutdown().await;

    println!("bench queries: {} archived jobs", args.jobs);
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| insert {} history documents | {insert_s:.1} s |",
        args.jobs
    );
    println!(
        "| first page (limit {}) p50 / p99 | {:.1} ms / {:.1} ms |",
        args.page,
        quantile(&mut first.clone(), 0.5),
        quantile(&mut first, 0.99)
    );
    println!(
        "| the same query on the store alone, p50 | {:.1} ms |",
        quantile(&mut direct, 0.5)
    );
    println!(
        "| filtered first page (status, machine_id) p50 | {:.1} ms |",
        quantile(&mut filtered, 0.5)
    );
    println!(
        "| page from the middle (until=) p50 | {:.1} ms |",
        quantile(&mut deep, 0.5)
    );
    println!(
        "| full streamed listing | {listed} ids, {:.1} KiB in {stream_s:.2} s |",
        bytes as f64 / 1024.0
    );
    println!(
        "| RSS before the full listing | {:.1} MiB |",
        rss_before as f64 / 1024.0
    );
    println!(
        "| peak RSS during the full listing | {:.1} MiB (+{:.1} MiB for {:.1} MiB of ids) |",
        peak_kib as f64 / 1024.0,
        peak_kib.saturating_sub(rss_before) as f64 / 1024.0,
        bytes as f64 / 1024.0 / 1024.0
    );
    Ok(())
}
