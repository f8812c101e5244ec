//! `bench queries`, listing over a large history: inserts N archived jobs, then measures the
//! first page, a filtered first page and the full streamed listing, with the process's RSS
//! around each.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mongodb::bson::Document;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use job_manager::config::{Config, Endpoints};
use job_manager::domain::{Job, JobStatus, Timestamp};
use job_manager::store::{ListFilter, Listing, Store};

use super::measure::{PeakRss, mib, quantile, rss_kib};

/// Options of `job-manager-tools bench queries`.
#[derive(Debug, Clone, Args)]
pub struct QueryBenchArgs {
    /// Archived jobs to insert.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Page size of the first-page measurements.
    #[arg(long, default_value_t = 100)]
    pub page: u32,
    #[command(flatten)]
    pub endpoints: Endpoints,
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

/// Inserts the history, measures, prints the table, and drops the database.
pub async fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut config = Config::defaults();
    config.endpoints = args.endpoints.clone();
    config.database = format!("jm_bench_{id}");
    config.prefix = format!("jm-bench-{id}");
    let store = Store::connect(&config.endpoints.mongodb_uri, &config.database).await?;
    let shutdown = CancellationToken::new();
    let measured = measure(&args, &config, &store, &shutdown).await;
    shutdown.cancel();
    let _ = store.database().drop().await;
    store.shutdown().await;
    print(&args, &measured?);
    Ok(())
}

/// What `bench queries` measured: milliseconds per request, unless named otherwise.
struct Measured {
    insert_s: f64,
    first: Vec<f64>,
    direct: Vec<f64>,
    filtered: Vec<f64>,
    deep: Vec<f64>,
    streamed: Streamed,
    rss_before_kib: u64,
}

async fn measure(
    args: &QueryBenchArgs,
    config: &Config,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<Measured> {
    store.ensure_indexes().await.context("creating indexes")?;
    let base = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let insert_s = insert_history(store, args.jobs, base).await?;
    let (url, service) = start_service(config, shutdown).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    wait_live(&client, &url).await?;
    let direct = store_pages(store, args.page).await?;
    let rss_before_kib = rss_kib();
    let middle = Timestamp::from(base + chrono::TimeDelta::milliseconds(args.jobs as i64 / 2));
    let page = args.page;
    let first = timed_gets(&client, &format!("{url}/history?limit={page}")).await?;
    let filtered_url = format!("{url}/history?limit={page}&status=failed&machine_id=machine-3");
    let filtered = timed_gets(&client, &filtered_url).await?;
    let deep = timed_gets(
        &client,
        &format!("{url}/history?limit={page}&until={middle}"),
    )
    .await?;
    let streamed = stream_all(&client, &url).await?;
    anyhow::ensure!(
        streamed.listed == args.jobs,
        "the full listing returned {} ids, expected {}",
        streamed.listed,
        args.jobs
    );
    shutdown.cancel();
    let _ = service.await;
    Ok(Measured {
        insert_s,
        first,
        direct,
        filtered,
        deep,
        streamed,
        rss_before_kib,
    })
}

/// Inserts `jobs` archived jobs created from `base` on, 5,000 at a time; the seconds it took.
async fn insert_history(
    store: &Store,
    jobs: usize,
    base: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let history = store.database().collection::<Document>("history");
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(5_000) {
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
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the service in process on a free port; its base URL and task.
async fn start_service(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let service = tokio::spawn(job_manager::app::run(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    Ok((format!("http://{address}{}", config.base_path), service))
}

async fn wait_live(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while client
        .get(format!("{url}/health/live"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The first page on the store alone, without HTTP: what the database server itself costs.
async fn store_pages(store: &Store, page: u32) -> anyhow::Result<Vec<f64>> {
    let mut direct = Vec::new();
    for _ in 0..20 {
        let filter = ListFilter {
            limit: Some(page + 1),
            ..Default::default()
        };
        let started = Instant::now();
        let listed: Vec<_> =
            futures::TryStreamExt::try_collect(store.list(Listing::History, &filter).await?)
                .await?;
        anyhow::ensure!(listed.len() == page as usize + 1, "short page");
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(direct)
}

/// 20 timed `GET url`s, in milliseconds.
async fn timed_gets(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = Instant::now();
        let response = client.get(url).send().await?.error_for_status()?;
        response.bytes().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// The full listing, read chunk by chunk.
struct Streamed {
    listed: usize,
    bytes: usize,
    seconds: f64,
    peak_kib: u64,
}

/// Reads the whole `/history` listing while a sampler tracks the peak RSS.
async fn stream_all(client: &reqwest::Client, url: &str) -> anyhow::Result<Streamed> {
    let peak = PeakRss::start(Duration::from_millis(5));
    let started = Instant::now();
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
    let seconds = started.elapsed().as_secs_f64();
    let peak_kib = peak.finish().await;
    Ok(Streamed {
        listed: if bytes > 2 { commas + 1 } else { 0 },
        bytes,
        seconds,
        peak_kib,
    })
}

fn print(args: &QueryBenchArgs, m: &Measured) {
    let p50 = |samples: &[f64]| quantile(&mut samples.to_vec(), 0.5);
    let (page, s) = (args.page, &m.streamed);
    println!("bench queries: {} archived jobs", args.jobs);
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| insert {} history documents | {:.1} s |",
        args.jobs, m.insert_s
    );
    println!(
        "| first page (limit {page}) p50 / p99 | {:.1} ms / {:.1} ms |",
        p50(&m.first),
        quantile(&mut m.first.clone(), 0.99)
    );
    println!(
        "| the same query on the store alone, p50 | {:.1} ms |",
        p50(&m.direct)
    );
    println!(
        "| filtered first page (status, machine_id) p50 | {:.1} ms |",
        p50(&m.filtered)
    );
    println!(
        "| page from the middle (until=) p50 | {:.1} ms |",
        p50(&m.deep)
    );
    println!(
        "| full streamed listing | {} ids, {:.1} KiB in {:.2} s |",
        s.listed,
        s.bytes as f64 / 1024.0,
        s.seconds
    );
    println!(
        "| RSS before the full listing | {:.1} MiB |",
        mib(m.rss_before_kib)
    );
    println!(
        "| peak RSS during the full listing | {:.1} MiB (+{:.1} MiB for {:.1} MiB of ids) |",
        mib(s.peak_kib),
        mib(s.peak_kib.saturating_sub(m.rss_before_kib)),
        s.bytes as f64 / 1024.0 / 1024.0
    );
}
