//! Reruns of the same file: every run has its own identity, so nothing of an earlier run can
//! touch a later one, whichever replica holds what.

use std::time::Duration;

use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::demo;
use serde_json::{Value, json};

use crate::helpers::{replica_of, spawn_app, stage_outputs};

fn first_task(job: &Value) -> String {
    job["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("a task in flight")
        .to_owned()
}

#[tokio::test]
async fn a_rerun_is_safe_from_a_replica_that_holds_a_copy_of_the_earlier_run() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    a.register_seed_pipeline().await;

    // Run 1 starts on replica B, which keeps the copy it wrote (stage 01 in flight).
    let id = b.start_job_on(demo::MACHINE_ID, "rerun").await;
    let run_1 = b.wait_for_stage(&id, "01").await;
    let run_1_id = run_1["run_id"].as_str().expect("a run id").to_owned();
    let run_1_task = first_task(&run_1);
    // Replica A moves run 1 on to stage 02, then aborts it: B's copy is two writes behind.
    let (status, body) = a
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ run_1_task.clone(): {"csv_file": "c1"} }),
        )
        .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (202, json!("recorded")),
        "{body}"
    );
    a.wait_for_stage(&id, "02").await;
    let (status, body) = a
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(status, 202, "{body}");
    a.wait_for_history(&id, Duration::from_secs(10)).await;

    // Run 2 of the same file: the same job id, versions from 0 again, so it soon stands at
    // the version of B's stale copy of run 1.
    assert_eq!(a.start_job_on(demo::MACHINE_ID, "rerun").await, id);
    let run_2 = a.wait_for_stage(&id, "01").await;
    let run_2_id = run_2["run_id"].as_str().expect("a run id").to_owned();
    assert_ne!(run_2_id, run_1_id);

    // A late result of run 1, through B over HTTP and over AMQP, is acknowledged and ignored.
    let (status, body) = b
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ run_1_task.clone(): {"csv_file": "late"} }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["outcome"], "ignored");
    assert_eq!(body["reason"], "result of another run");
    let late = json!({"task_id": run_1_task, "job_id": id, "run_id": run_1_id,
                      "outputs": {"csv_file": "late"}, "error": null});
    let publisher = Publisher::open(&a.amqp).await.expect("publisher");
    publisher
        .publish(
            Outgoing::json("", a.names.results_queue(), "stage-result", &late).expect("encode"),
        )
        .await
        .expect("publish");
    a.wait_until_consumed(&a.names.results_queue()).await;
    let (_, still) = a.get(&format!("/jobs/{id}")).await;
    assert_eq!(still["run_id"], run_2_id.as_str());
    assert_eq!(
        still["current_stage"], run_2["current_stage"],
        "run 2 untouched"
    );

    // An abort through B, which still holds its copy of run 1, aborts run 2.
    let (status, body) = b
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let record = a.wait_for_history_of_run(&id, &run_2_id).await;
    assert_eq!(record["status"], "aborted");
    let earlier = record["previous_runs"].as_array().expect("earlier runs");
    assert_eq!(earlier.len(), 1, "{record}");
    assert_eq!(earlier[0]["run_id"], run_1_id.as_str());
    assert_eq!(earlier[0]["status"], "aborted");
    // Each run exactly as it was: run 1 got to stage 02 with 01's output, run 2 stopped in 01.
    let ids = |run: &Value| {
        stage_outputs(run)
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&earlier[0]), ["init", "01", "02"]);
    assert_eq!(
        stage_outputs(&earlier[0])[1].1,
        vec![json!({"csv_file": "c1"})]
    );
    assert_eq!(ids(&record), ["init", "01"]);
    assert_eq!(
        a.get(&format!("/jobs/{id}")).await.0,
        404,
        "run 2 left the active jobs"
    );
    assert!(
        a.take(&a.names.dead_queue(), Duration::from_millis(200))
            .await
            .is_none(),
        "nothing dead-lettered"
    );
    b.stop().await;
    a.cleanup().await;
}

#[tokio::test]
async fn archivers_that_repeat_race_or_come_late_keep_every_run_once() {
    use job_manager::domain::{Job, JobStatus, Timestamp};
    let app = spawn_app().await;
    let store = &app.store;
    let run = |run_id: &str| {
        let mut job = Job::new(
            "m",
            "same-file",
            "f",
            "p",
            Vec::new(),
            Default::default(),
            run_id.to_owned(),
            Timestamp::now(),
        );
        job.status = JobStatus::Finished;
        job
    };
    let (first, second, third) = (run("run-1"), run("run-2"), run("run-3"));
    let runs_on_record = || async {
        let record = store
            .load_history(&first.id)
            .await
            .expect("load")
            .expect("record");
        let mut ids: Vec<String> = record
            .previous_runs
            .iter()
            .map(|r| r.run_id.clone())
            .collect();
        ids.push(record.job.run_id);
        ids
    };
    store.insert_job(&first).await.expect("insert");
    store.archive(&first).await.expect("archive");
    store.insert_job(&second).await.expect("insert");
    store.archive(&second).await.expect("archive");
    assert_eq!(runs_on_record().await, ["run-1", "run-2"]);
    // A late archiver of run 1 (a slow replica, the sweep) changes nothing.
    store.archive(&first).await.expect("archive");
    assert_eq!(runs_on_record().await, ["run-1", "run-2"]);
    // Run 3 archived by two archivers at once: on record once, on top.
    store.insert_job(&third).await.expect("insert");
    let (a, b) = tokio::join!(store.archive(&third), store.archive(&third));
    a.expect("archive");
    b.expect("archive");
    assert_eq!(runs_on_record().await, ["run-1", "run-2", "run-3"]);
    assert!(store.load_job(&first.id).await.expect("load").is_none());
    app.cleanup().await;
}
