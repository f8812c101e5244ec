//! What a chaos run checks: the outputs the chaos workers give, the record every job must end
//! with, and the report's figures.

use serde_json::{Value, json};

use job_manager_worker::Dispatch;

/// The figures of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub submitted: usize,
    pub finished: usize,
    pub failed: usize,
    /// Jobs still active when the run's deadline passed.
    pub stuck: usize,
    /// Jobs neither active nor in history.
    pub lost: usize,
    pub duplicated_outputs: usize,
    pub wrong_outputs: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.submitted > 0
            && self.finished == self.submitted
            && self.failed == 0
            && self.stuck == 0
            && self.lost == 0
            && self.duplicated_outputs == 0
            && self.wrong_outputs == 0
    }

    /// Prints the report of a run with `replicas` replicas and `faults` (their names).
    pub fn print(&self, replicas: usize, faults: &[String]) {
        let faults = if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        };
        println!("chaos report");
        println!("  replicas            {replicas}");
        println!("  faults              {faults}");
        println!("  jobs submitted      {}", self.submitted);
        println!("  jobs finished       {}", self.finished);
        println!("  jobs failed         {}", self.failed);
        println!("  jobs stuck          {}", self.stuck);
        println!("  jobs lost           {}", self.lost);
        println!("  duplicated outputs  {}", self.duplicated_outputs);
        println!("  wrong outputs       {}", self.wrong_outputs);
        let verdict = if self.is_clean() {
            "clean"
        } else {
            "NOT CLEAN"
        };
        println!("  verdict             {verdict}");
    }
}

/// What the chaos workers return: deterministic, so the record can be checked exactly.
pub fn chaos_outputs(dispatch: &Dispatch) -> Result<Value, String> {
    let text = |name: &str| {
        dispatch
            .inputs
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("input '{name}' missing"))
    };
    Ok(match dispatch.worker.id.as_str() {
        "import-csv" => json!({"csv_file": format!("csv-{}", text("source_file")?)}),
        "trim-csv" => json!({"output_csv": format!("trim-{}", text("input_csv")?)}),
        "split-by-sensor" => {
            let input = text("input_csv")?;
            Value::Array(
                (1..=14)
                    .map(|n| json!({"unique_id": format!("sensor-{n:02}"), "result_table": format!("{input}-{n:02}")}))
                    .collect(),
            )
        }
        "sink" => Value::Null,
        other => return Err(format!("no chaos worker '{other}'")),
    })
}

/// The stage outputs a job on `file` must end with.
pub fn expected_stages(file: &str) -> Vec<(String, Vec<Value>)> {
    let csv = format!("csv-{file}");
    let trimmed = format!("trim-{csv}");
    vec![
        ("init".into(), vec![json!({"init_source": file})]),
        ("01".into(), vec![json!({"csv_file": csv})]),
        ("02".into(), vec![json!({"output_csv": trimmed})]),
        (
            "03".into(),
            (1..=14)
                .map(|n| json!({"unique_id": format!("sensor-{n:02}"), "result_table": format!("{trimmed}-{n:02}")}))
                .collect(),
        ),
        ("04".into(), vec![Value::Null; 14]),
    ]
}

/// Compares a history record with what it must be: `(duplicated, wrong)` output counts.
pub fn check_record(record: &Value, file: &str) -> (usize, usize) {
    let expected = expected_stages(file);
    let stages = record["stages"].as_array().cloned().unwrap_or_default();
    let mut duplicated = 0;
    let mut wrong = 0;
    for (i, (id, outputs)) in expected.iter().enumerate() {
        let Some(stage) = stages.get(i).filter(|s| s["id"] == id.as_str()) else {
            wrong += outputs.len();
            continue;
        };
        let actual = stage["outputs"].as_array().cloned().unwrap_or_default();
        duplicated += actual.len().saturating_sub(outputs.len());
        wrong += outputs
            .iter()
            .enumerate()
            .filter(|(n, o)| actual.get(*n) != Some(o))
            .count();
    }
    wrong += stages.len().saturating_sub(expected.len());
    (duplicated, wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(worker: &str, inputs: Value) -> Dispatch {
        serde_json::from_value(json!({
            "task_id": "0".repeat(32), "job_id": "A".repeat(22), "run_id": "r",
            "machine_id": "m", "pipeline_id": "p", "stage_id": "01",
            "worker": {"id": worker, "name": worker}, "inputs": inputs, "configs": {},
            "attempt": 1, "deadline": "2030-01-01T00:00:00Z"
        }))
        .expect("a dispatch")
    }

    fn record(stages: &[(String, Vec<Value>)]) -> Value {
        json!({"stages": stages.iter().map(|(id, o)| json!({"id": id, "outputs": o})).collect::<Vec<_>>()})
    }

    #[test]
    fn the_workers_chain_into_the_expected_record() {
        let one = chaos_outputs(&dispatch("import-csv", json!({"source_file": "f"}))).expect("ok");
        let two = chaos_outputs(&dispatch("trim-csv", json!({"input_csv": one["csv_file"]})))
            .expect("ok");
        let three = chaos_outputs(&dispatch(
            "split-by-sensor",
            json!({"input_csv": two["output_csv"]}),
        ))
        .expect("ok");
        let expected = expected_stages("f");
        assert_eq!(expected[1].1, vec![one]);
        assert_eq!(expected[2].1, vec![two]);
        assert_eq!(Value::Array(expected[3].1.clone()), three);
    }

    #[test]
    fn check_record_counts_duplicates_and_wrong_outputs() {
        let expected = expected_stages("f");
        assert_eq!(check_record(&record(&expected), "f"), (0, 0));
        let mut doubled = expected.clone();
        doubled[4].1.push(Value::Null);
        assert_eq!(check_record(&record(&doubled), "f"), (1, 0));
        let mut swapped = expected.clone();
        swapped[3].1.swap(0, 1);
        assert_eq!(check_record(&record(&swapped), "f"), (0, 2));
        assert_eq!(check_record(&record(&expected[..3]), "f"), (0, 28));
    }

    #[test]
    fn a_report_is_clean_only_without_losses() {
        let clean = Report {
            submitted: 2,
            finished: 2,
            ..Report::default()
        };
        assert!(clean.is_clean());
        assert!(
            !Report {
                lost: 1,
                ..clean.clone()
            }
            .is_clean()
        );
        assert!(
            !Report {
                stuck: 1,
                ..clean.clone()
            }
            .is_clean()
        );
        assert!(
            !Report {
                duplicated_outputs: 1,
                ..clean.clone()
            }
            .is_clean()
        );
        assert!(!Report::default().is_clean());
    }
}
