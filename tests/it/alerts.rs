//! Alerting and recording rules against the reference: the same rule files
//! and promtool unit tests (tests/fixtures/rules/) run through Debian's
//! `promtool test rules` and `perch rules test`, which evaluates them with
//! perch's store, PromQL engine and rule evaluator. Both must pass the
//! good files and both must fail a file whose expectations are wrong, so
//! the comparison can fail. Bad rule files get every problem with its line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{have_command, BIN};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// Runs a command; its exit code and what it printed.
fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `promtool VERB rules FILE` and `perch rules VERB FILE`.
fn both(verb: &str, file: &Path) -> ((i32, String), (i32, String)) {
    let promtool = run(Command::new("promtool").args([verb, "rules"]).arg(file));
    let perch = run(Command::new(BIN).args(["rules", verb]).arg(file));
    (promtool, perch)
}

#[test]
fn rule_unit_tests_pass_in_promtool_and_in_perch() {
    if !have_command("promtool") {
        return;
    }
    for file in ["prometheus_unittest.yml", "iot_unittest.yml"] {
        let path = fixtures().join(file);
        let ((pc, pout), (c, out)) = both("test", &path);
        assert_eq!(pc, 0, "promtool on {file}:\n{pout}");
        assert_eq!(c, 0, "perch on {file}:\n{out}");
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn wrong_expectations_fail_in_both() {
    if !have_command("promtool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The IoT tests with two expectations changed: the annotation's value
    // and the time the alert went active.
    let text = std::fs::read_to_string(fixtures().join("iot_unittest.yml"))
        .unwrap()
        .replace(
            "- iot_rules.yml",
            &format!("- {}", fixtures().join("iot_rules.yml").display()),
        )
        .replace("is at -5.4 °C", "is at -5.3 °C")
        .replace("value: 480", "value: 540");
    let path = dir.path().join("wrong.yml");
    std::fs::write(&path, text).unwrap();
    let ((pc, pout), (c, out)) = both("test", &path);
    assert_eq!(pc, 1, "promtool:\n{pout}");
    assert_eq!(c, 1, "perch:\n{out}");
    // perch says what it expected and what it got, as promtool does.
    assert!(
        out.contains("The freezer is at -5.3 °C") && out.contains("The freezer is at -5.4 °C"),
        "{out}"
    );
    assert!(
        out.contains("ALERTS_FOR_STATE") && out.contains(" 480]"),
        "{out}"
    );
}

#[test]
fn rule_files_check_like_promtool_with_lines() {
    if !have_command("promtool") {
        return;
    }
    for file in ["prometheus_rules.yml", "iot_rules.yml"] {
        let ((pc, pout), (c, out)) = both("check", &fixtures().join(file));
        assert_eq!((pc, c), (0, 0), "{file}:\npromtool: {pout}\nperch: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: rate(temperature[5m]\n      - record: job:x\n        expr: up\n        annotations: {a: b}\n      - alert: T\n        expr: up\n        labels:\n          severity: '{{ $labels.x '\n",
    )
    .unwrap();
    let ((pc, pout), (c, out)) = both("check", &bad);
    assert_eq!(pc, 1, "promtool accepted it:\n{pout}");
    assert_eq!(c, 1, "perch accepted it:\n{out}");
    let name = bad.display().to_string();
    for (line, what) in [
        (5, "could not parse expression"),
        (8, "invalid field 'annotations' in recording rule"),
        (12, "template"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(what)),
            "line {line} {what}:\n{out}"
        );
    }
}
