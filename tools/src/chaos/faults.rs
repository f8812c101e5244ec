//! The faults a chaos run injects, and how it injects each.

use std::time::Duration;

use anyhow::bail;
use clap::ValueEnum;

use super::cluster::Run;
use super::proxy::Mode;
use super::services::run_command;

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// `kill -9` one replica, then start it again.
    Kill,
    /// `kill -9` the replica active on the most result partitions, and leave it dead: the
    /// others must take its partitions and finish its jobs.
    KillOwner,
    /// Stop and start the RabbitMQ application (`rabbitmqctl stop_app` / `start_app`).
    Rabbitmq,
    /// Stop and start the MongoDB-wire server (the run then starts its own on `--mongodb-port`).
    Mongodb,
    /// Deliver every result twice (for the whole run).
    Duplicates,
    /// Add `--slow-ms` each way to one replica's MongoDB connections for `--network-fault-s`.
    MongodbSlow,
    /// Hold every byte of one replica's MongoDB connections for `--network-fault-s`.
    MongodbStall,
    /// Reset every MongoDB connection of one replica, and refuse new ones for 6 s.
    MongodbCut,
    /// Add `--slow-ms` each way to one replica's RabbitMQ connection for `--network-fault-s`.
    RabbitmqSlow,
    /// Hold every byte of one replica's RabbitMQ connection for `--network-fault-s`.
    RabbitmqStall,
    /// Reset one replica's RabbitMQ connection, and refuse new ones for 6 s.
    RabbitmqCut,
}

/// How long a cut refuses new connections: longer than the MongoDB driver's 5 s server
/// selection, so operations fail in the replica and not only inside the driver's own retry.
const CUT_FOR: Duration = Duration::from_secs(6);

impl Fault {
    /// The server whose connections this fault disturbs, if it is a network fault.
    pub fn network(self) -> Option<&'static str> {
        match self {
            Fault::MongodbSlow | Fault::MongodbStall | Fault::MongodbCut => Some("mongodb"),
            Fault::RabbitmqSlow | Fault::RabbitmqStall | Fault::RabbitmqCut => Some("rabbitmq"),
            Fault::Kill
            | Fault::KillOwner
            | Fault::Rabbitmq
            | Fault::Mongodb
            | Fault::Duplicates => None,
        }
    }

    /// The name it has on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

impl Run {
    /// Injects `fault`; `round` picks the replica it hits.
    pub async fn inject(&self, fault: Fault, round: usize) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                let index = round % self.replicas.len();
                let mut replica = self.replicas[index].lock().await;
                if let Some(mut child) = replica.child.take() {
                    child.start_kill()?;
                    let _ = child.wait().await;
                }
                println!("  fault: kill -9 replica {index}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.start_replica(&mut replica).await?;
            }
            Fault::KillOwner => self.kill_owner().await?,
            Fault::Rabbitmq => {
                println!("  fault: restart rabbitmq");
                run_command("rabbitmqctl", &["stop_app"]).await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
                run_command("rabbitmqctl", &["start_app"]).await?;
            }
            Fault::Mongodb => {
                let Some(mongo) = &self.own_mongodb else {
                    bail!("a mongodb fault needs the run's own server");
                };
                println!("  fault: restart mongodb");
                let mut mongo = mongo.lock().await;
                mongo.stop().await?;
                // Longer than the driver's 5 s server selection, so operations really fail.
                tokio::time::sleep(Duration::from_secs(8)).await;
                mongo.start().await?;
            }
            Fault::Duplicates => {}
            network => self.disturb(network, round).await?,
        }
        Ok(())
    }

    /// Kills, with `kill -9`, the replica active on the most result partitions, as its own
    /// `/metrics` says, and does not start it again.
    async fn kill_owner(&self) -> anyhow::Result<()> {
        let mut owner = None;
        for (index, replica) in self.replicas.iter().enumerate() {
            let port = replica.lock().await.port;
            let active = self.partitions_active(port).await.unwrap_or(0.0);
            println!("  replica {index} is active on {active} result partitions");
            if owner.is_none_or(|(_, most)| active > most) {
                owner = Some((index, active));
            }
        }
        let Some((index, active)) = owner.filter(|(_, active)| *active > 0.0) else {
            bail!("no replica is active on a result partition");
        };
        let mut replica = self.replicas[index].lock().await;
        if let Some(mut child) = replica.child.take() {
            child.start_kill()?;
            let _ = child.wait().await;
        }
        println!("  fault: kill -9 replica {index}, active on {active} partitions; not restarted");
        Ok(())
    }

    /// The `job_manager_result_partitions_active` gauge of the replica on `port`.
    async fn partitions_active(&self, port: u16) -> Option<f64> {
        let text = self.metrics(port).await?;
        text.lines()
            .find_map(|line| line.strip_prefix("job_manager_result_partitions_active "))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Switches one replica's proxy to the fault's mode, waits, and switches it back to pass.
    async fn disturb(&self, fault: Fault, round: usize) -> anyhow::Result<()> {
        let index = round % self.replicas.len();
        let (Some(server), Some(proxies)) = (fault.network(), self.proxies.get(index)) else {
            bail!("{} needs the run's proxies", fault.name());
        };
        let proxy = if server == "mongodb" {
            &proxies.mongodb
        } else {
            &proxies.rabbitmq
        };
        let hold = Duration::from_secs(self.args.network_fault_s);
        let (mode, hold, what) = match fault {
            Fault::MongodbSlow | Fault::RabbitmqSlow => {
                let delay = Duration::from_millis(self.args.slow_ms);
                (
                    Mode::Slow(delay),
                    hold,
                    format!("slow by {} ms each way", self.args.slow_ms),
                )
            }
            Fault::MongodbStall | Fault::RabbitmqStall => (Mode::Stall, hold, "stalled".into()),
            _ => (Mode::Cut, CUT_FOR, "cut".into()),
        };
        println!(
            "  fault: replica {index}'s {server} connections ({} open) {what} for {:.0} s",
            proxy.open_connections(),
            hold.as_secs_f64()
        );
        proxy.set(mode);
        tokio::time::sleep(hold).await;
        proxy.set(Mode::Pass);
        Ok(())
    }
}
