//! `--threads N`: libtorch's CPU thread count for every command, reported where the command reports its
//! device, and recorded nowhere in the run.

mod common;

use common::{Fixture, mnist_tch};

#[test]
fn threads_sets_libtorchs_cpu_threads_and_stays_out_of_the_run() {
    let fixture = Fixture::new(false);
    for threads in ["1", "2"] {
        let out = format!("run{threads}");
        let run = fixture.train(&out, &["--epochs", "1", "--threads", threads]);
        run.assert_ok();
        assert!(run.stdout.contains(&format!("Threads: {threads} ")), "{}", run.stdout);
        let config = std::fs::read_to_string(fixture.path(&out).join("config.json")).unwrap();
        assert!(!config.contains("thread"), "{config}");
    }
    // Before the subcommand too (a global flag), and in evaluate's report.
    let run = fixture.path("run1");
    let evaluate = mnist_tch(&["--threads", "3", "evaluate", run.to_str().unwrap(), "--device", "cpu", "--json"]);
    evaluate.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&evaluate.stdout).unwrap();
    assert_eq!(report["threads"], 3);
    let refused = mnist_tch(&["evaluate", run.to_str().unwrap(), "--threads", "0"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("must be at least 1"), "{}", refused.stderr);
}
