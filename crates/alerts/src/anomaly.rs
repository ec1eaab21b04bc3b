//! Anomaly rules without PromQL (`[[alerts.anomaly]]`): each becomes an
//! alerting rule of a generated rule file, so it is evaluated, listed,
//! kept and notified like any other. The expression compares the latest
//! value with the mean and standard deviation over a window:
//!
//! - the window just past: `abs(x - avg_over_time(x[w])) > k *
//!   stddev_over_time(x[w])`;
//! - the same window on each of N previous days: the mean of the days'
//!   means, and the pooled standard deviation (the square root of the mean
//!   of the days' `σ² + μ²`, less the mean squared).
//!
//! Either only where the deviation is above 0 (a flat series has no
//! anomalies).

use config::AnomalyConfig;

/// `'…'` in YAML: a quote doubled.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn duration(d: &config::Duration) -> String {
    format!("{}s", d.0.as_secs().max(1))
}

/// The PromQL of one anomaly rule.
pub fn expr(a: &AnomalyConfig) -> String {
    let x = a.series.trim();
    let w = duration(&a.window);
    let k = a.deviations;
    if a.same_hour_days == 0 {
        return format!(
            "abs({x} - avg_over_time({x}[{w}])) > {k} * stddev_over_time({x}[{w}]) and stddev_over_time({x}[{w}]) > 0"
        );
    }
    let n = a.same_hour_days;
    let days: Vec<u32> = (1..=n).collect();
    let sum =
        |f: &dyn Fn(u32) -> String| days.iter().map(|&d| f(d)).collect::<Vec<_>>().join(" + ");
    let mean = format!(
        "(({}) / {n})",
        sum(&|d| format!("avg_over_time({x}[{w}] offset {d}d)"))
    );
    let second_moment = format!(
        "(({}) / {n})",
        sum(&|d| format!(
            "(stddev_over_time({x}[{w}] offset {d}d) ^ 2 + avg_over_time({x}[{w}] offset {d}d) ^ 2)"
        ))
    );
    let sigma = format!("sqrt(clamp_min({second_moment} - {mean} ^ 2, 0))");
    format!("abs({x} - {mean}) > {k} * {sigma} and {sigma} > 0")
}

/// The generated rule file: one group, `anomalies`.
pub fn rule_file(anomalies: &[AnomalyConfig]) -> String {
    let mut s = String::from("groups:\n  - name: anomalies\n    rules:\n");
    for a in anomalies {
        let against = if a.same_hour_days == 0 {
            format!("the last {}", duration(&a.window))
        } else {
            format!(
                "the same {} of the {} days before",
                duration(&a.window),
                a.same_hour_days
            )
        };
        s.push_str(&format!("      - alert: {}\n", quoted(&a.name)));
        s.push_str(&format!("        expr: {}\n", quoted(&expr(a))));
        if let Some(f) = &a.for_ {
            s.push_str(&format!("        for: {}\n", duration(f)));
        }
        s.push_str(&format!(
            "        labels:\n          severity: info\n          series: {}\n",
            quoted(&a.series.replace("{{", "{ {"))
        ));
        s.push_str(&format!(
            "        annotations:\n          summary: {}\n",
            quoted(&format!(
                "{} is {{{{ $value | humanize }}}} away from its mean over {against}, more than {} standard deviations",
                a.series.replace("{{", "{ {"),
                a.deviations
            ))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(days: u32) -> AnomalyConfig {
        toml::from_str(&format!(
            "series = 'temperature{{device=\"freezer\"}}'\nwindow = \"1h\"\nsame_hour_days = {days}\n"
        ))
        .unwrap()
    }

    #[test]
    fn generated_rules_parse() {
        for days in [0, 1, 7] {
            let file = rule_file(&[anomaly(days)]);
            let parsed =
                crate::rulefile::parse("anomaly", &file).unwrap_or_else(|e| panic!("{e}\n{file}"));
            assert_eq!(parsed.groups[0].rules[0].name(), "Anomaly");
        }
        assert_eq!(
            expr(&anomaly(0)),
            "abs(temperature{device=\"freezer\"} - avg_over_time(temperature{device=\"freezer\"}[3600s])) > 3 * stddev_over_time(temperature{device=\"freezer\"}[3600s]) and stddev_over_time(temperature{device=\"freezer\"}[3600s]) > 0"
        );
        assert!(expr(&anomaly(2)).contains("offset 2d"));
    }

    /// tests/fixtures/rules/anomaly_rules.yml, which promtool and perch
    /// both test, holds what the generator writes.
    #[test]
    fn the_tested_fixture_is_what_is_generated() {
        let fixture = include_str!("../../../tests/fixtures/rules/anomaly_rules.yml");
        let want = format!("expr: {}", quoted(&expr(&anomaly(1))));
        assert!(fixture.contains(&want), "{want}");
    }
}
