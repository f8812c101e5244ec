//! The tools' `--help` never shows a password or token, as the service's does not
//! (tests/api/hardening.rs): their endpoints come from the same variables.

use std::process::Command;

#[test]
fn help_never_shows_a_password() {
    let env = [
        (
            "JOB_MANAGER_AMQP_URL",
            "amqp://jm:amqp-hunter2@rabbit:5672/jobs",
        ),
        (
            "JOB_MANAGER_MONGODB_URI",
            "mongodb://jm:mongo-hunter2@mongo:27017/",
        ),
    ];
    let commands: [&[&str]; 6] = [
        &["--help"],
        &["chaos", "--help"],
        &["bench", "--help"],
        &["bench", "all", "--help"],
        &["bench", "width", "--help"],
        &["bench", "queries", "--help"],
    ];
    for args in commands {
        let output = Command::new(env!("CARGO_BIN_EXE_job-manager-tools"))
            .args(args)
            .envs(env)
            .output()
            .expect("the tools run");
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{args:?}: {help}");
        assert!(
            !help.contains("hunter2"),
            "{args:?} shows a secret:\n{help}"
        );
        assert!(
            !help.contains("guest:guest"),
            "{args:?} shows the default password:\n{help}"
        );
    }
    let all = Command::new(env!("CARGO_BIN_EXE_job-manager-tools"))
        .args(["bench", "all", "--help"])
        .output()
        .expect("the tools run");
    let help = String::from_utf8_lossy(&all.stdout);
    assert!(
        help.contains("JOB_MANAGER_AMQP_URL") && help.contains("--quick"),
        "{help}"
    );
}
