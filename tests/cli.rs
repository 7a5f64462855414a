//! The command line as users read it: `--help` text that is right for each subcommand and says each
//! default once, Keras's spellings of the monitored metric, and `--model` on every subcommand that
//! takes a run.

mod common;

use common::{Fixture, mnist_tch};

/// The help paragraph of `flag` in `help`: its line and the indented lines after it, up to the next flag.
fn flag_help(help: &str, flag: &str) -> String {
    let mut lines = help.lines().skip_while(|l| !l.trim_start().starts_with(&format!("{flag} ")));
    let first = lines.next().unwrap_or_else(|| panic!("{flag} is not in:\n{help}"));
    let rest = lines.take_while(|l| !l.trim_start().starts_with('-') || l.trim_start().starts_with("- "));
    std::iter::once(first).chain(rest).collect::<Vec<_>>().join("\n")
}

#[test]
fn finetune_help_says_nothing_of_resume() {
    let finetune = mnist_tch(&["finetune", "--help"]);
    finetune.assert_ok();
    assert!(!finetune.stdout.contains("resume"), "{}", finetune.stdout);
    // train's --resume says what --epochs means when resuming.
    let train = mnist_tch(&["train", "--help"]);
    assert!(flag_help(&train.stdout, "--resume").contains("--epochs in total"), "{}", train.stdout);
}

#[test]
fn each_default_is_stated_once() {
    let train = mnist_tch(&["train", "--help"]).stdout;
    for flag in ["--dropout", "--weight-decay", "--epochs", "--batch-size", "--min-delta"] {
        let paragraph = flag_help(&train, flag);
        assert_eq!(paragraph.to_lowercase().matches("default").count(), 1, "{paragraph}");
    }
}

#[test]
fn predict_help_explains_every_value_of_invert_and_fit() {
    let help = mnist_tch(&["predict", "--help"]).stdout;
    let invert = flag_help(&help, "--invert");
    for value in ["auto", "yes", "no"] {
        assert!(invert.contains(&format!("- {value}: ")), "{value} is not explained:\n{invert}");
    }
    let fit = flag_help(&help, "--fit");
    for value in ["auto", "digits", "fashion", "none"] {
        assert!(fit.contains(&format!("- {value}: ")), "{value} is not explained:\n{fit}");
    }
}

#[test]
fn monitor_takes_keras_spellings_too() {
    let fixture = Fixture::new(false);
    for (given, recorded) in [
        ("val_loss", "val_loss"),
        ("val-loss", "val_loss"),
        ("val_accuracy", "val_accuracy"),
        ("val-accuracy", "val_accuracy"),
    ] {
        let run = fixture.train("run", &["--monitor", given, "--print-config"]);
        run.assert_ok();
        let config: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(config["training"]["monitor"], recorded, "--monitor {given}");
    }
    let run = fixture.train("run", &["--monitor", "loss", "--print-config"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
}

#[test]
fn plot_takes_the_run_as_model_like_every_other_subcommand() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let plotted = mnist_tch(&["plot", "--model", run.to_str().unwrap()]);
    plotted.assert_ok();
    assert!(run.join("learning_curves.png").is_file() && run.join("confusion_matrix.png").is_file());
    mnist_tch(&["plot", run.to_str().unwrap()]).assert_ok();
    for args in [vec!["plot"], vec!["plot", "--model", run.to_str().unwrap(), run.to_str().unwrap()]] {
        let refused = mnist_tch(&args);
        assert_eq!(refused.code(), Some(2), "{args:?}: {}", refused.stderr);
        assert!(refused.stderr.starts_with("error: "), "{}", refused.stderr);
    }
}

#[test]
fn count_flags_say_plainly_what_they_take() {
    let fixture = Fixture::new(false);
    for (flag, value, message) in [
        ("--epochs", "0", "must be at least 1"),
        ("--batch-size", "0", "must be at least 1"),
        ("--limit", "0", "must be at least 1"),
        ("--early-stopping", "0", "must be at least 1"),
        ("--epochs", "ten", "not a whole number"),
        ("--num-classes", "1", "must be between 2 and 256"),
        ("--num-classes", "300", "must be between 2 and 256"),
    ] {
        let run = fixture.train("run", &[flag, value]);
        assert_eq!(run.code(), Some(2), "{flag} {value}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(flag) && first.contains(message), "{first}");
        assert!(!run.stderr.contains("18446744073709551615"), "{}", run.stderr);
    }
    let run = mnist_tch(&["predict", "--model", "run", "--top-k", "0", "picture.png"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--top-k") && run.stderr.contains("must be at least 1"), "{}", run.stderr);
}
