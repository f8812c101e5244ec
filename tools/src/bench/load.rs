//! Starting jobs on a [`Cluster`] and waiting for them to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use mongodb::bson::{Document, doc};
use serde_json::json;
use tokio::task::JoinSet;

use super::cluster::Cluster;

impl Cluster {
    /// Starts job number `n` on `machine`, on one of the replicas in turn.
    async fn start_job(
        client: &reqwest::Client,
        bases: &[String],
        machine: &str,
        tag: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let body = json!({"hash": format!("{tag}-{n}"), "machine_id": machine, "file_name": format!("f{n}")});
        let base = &bases[n % bases.len()];
        let response = client
            .post(format!("{base}/jobs"))
            .json(&body)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("starting a job: {}", response.status());
        }
        Ok(())
    }

    /// Starts one job of file `hash` on `machine` on the first replica; its id.
    pub async fn start_one(&self, machine: &str, hash: &str) -> anyhow::Result<String> {
        let body = json!({"hash": hash, "machine_id": machine, "file_name": hash});
        let response = self
            .client
            .post(format!("{}/jobs", self.bases[0]))
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("starting a job: {}", response.status());
        }
        let answer: serde_json::Value = response.json().await?;
        match answer["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => bail!("starting a job: no id in {answer}"),
        }
    }

    /// Starts `count` jobs on `machine`, `in_flight` requests at a time, spread over the replicas.
    pub async fn submit(
        &self,
        machine: &str,
        tag: &str,
        count: usize,
        in_flight: usize,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        for _ in 0..in_flight.max(1) {
            let (next, client, bases) = (next.clone(), self.client.clone(), self.bases.clone());
            let (machine, tag) = (machine.to_owned(), tag.to_owned());
            set.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    Self::start_job(&client, &bases, &machine, &tag, n).await?;
                }
            });
        }
        while let Some(result) = set.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Starts `count` jobs on `machine` at a steady `per_s`, whatever the replies take (an open
    /// loop, as independent clients would).
    pub async fn submit_paced(
        &self,
        machine: &str,
        tag: &str,
        count: usize,
        per_s: f64,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s.max(0.01)));
        let mut set = JoinSet::new();
        for n in 0..count {
            ticker.tick().await;
            let (client, bases) = (self.client.clone(), self.bases.clone());
            let (machine, tag) = (machine.to_owned(), tag.to_owned());
            set.spawn(async move { Self::start_job(&client, &bases, &machine, &tag, n).await });
        }
        while let Some(result) = set.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Waits until `count` jobs are in history, looking every 20 ms.
    pub async fn wait_archived(&self, count: u64, limit: Duration) -> anyhow::Result<Duration> {
        let every = Duration::from_millis(20);
        let marks = self.wait_archived_marks(&[count], limit, every).await?;
        Ok(marks[0])
    }

    /// Waits until each count of `marks` (ascending) is in history, looking `every` so often;
    /// the time each was reached.
    pub async fn wait_archived_marks(
        &self,
        marks: &[u64],
        limit: Duration,
        every: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let started = Instant::now();
        let history = self.store.database().collection::<Document>("history");
        let mut reached = Vec::with_capacity(marks.len());
        while reached.len() < marks.len() {
            let archived = history.count_documents(doc! {}).await?;
            while reached.len() < marks.len() && archived >= marks[reached.len()] {
                reached.push(started.elapsed());
            }
            if reached.len() == marks.len() {
                break;
            }
            if started.elapsed() > limit {
                bail!(
                    "{archived} of {} jobs archived after {limit:?}",
                    marks[marks.len() - 1]
                );
            }
            tokio::time::sleep(every).await;
        }
        Ok(reached)
    }

    /// The BSON size of the largest history record: a job's document is largest when it
    /// ends, and that is what is archived.
    pub async fn largest_record(&self) -> anyhow::Result<usize> {
        let history = self
            .store
            .database()
            .collection::<mongodb::bson::RawDocumentBuf>("history");
        let mut cursor = history.find(doc! {}).await?;
        let mut largest = 0;
        while cursor.advance().await? {
            largest = largest.max(cursor.current().as_bytes().len());
        }
        Ok(largest)
    }
}
