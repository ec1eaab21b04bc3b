use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use base::names::{sanitize_label_name, sanitize_metric_name};

const DEFAULT_TS: i64 = 42;

/// One line per sample: `labels value @ms`, values in `{:?}` so that `2.0`
/// and `2` can't be confused and large exponents stay readable.
fn render(p: &ParsedLines) -> Vec<String> {
    p.series
        .iter()
        .flat_map(|s| {
            s.samples
                .iter()
                .map(move |(t, v)| format!("{} {v:?} @{t}", s.labels))
        })
        .collect()
}

use Precision::*;

/// Every line here is valid on its own; the expected samples are in output
/// order (series in order of first appearance, which for one line is field
/// order).
const VALID: &[(Precision, &str, &[&str])] = &[
    // The documented mapping.
    (
        Nanoseconds,
        "m,tag=a f=1.5,g=2i 1700000000000000000",
        &[
            r#"m_f{tag="a"} 1.5 @1700000000000"#,
            r#"m_g{tag="a"} 2.0 @1700000000000"#,
        ],
    ),
    (
        Nanoseconds,
        "m value=3 1700000000000000000",
        &["m{} 3.0 @1700000000000"],
    ),
    (
        Nanoseconds,
        "m,t=a value=1,other=2",
        &[r#"m{t="a"} 1.0 @42"#, r#"m_other{t="a"} 2.0 @42"#],
    ),
    (
        Nanoseconds,
        "weather,location=us-midwest temperature=82 1465839830100400200",
        &[r#"weather_temperature{location="us-midwest"} 82.0 @1465839830100"#],
    ),
    // Whitespace.
    (Nanoseconds, "m f=1", &["m_f{} 1.0 @42"]),
    (Nanoseconds, "m f=1   ", &["m_f{} 1.0 @42"]),
    (Nanoseconds, "m   f=1    1000000", &["m_f{} 1.0 @1"]),
    (Nanoseconds, "   m f=1", &["m_f{} 1.0 @42"]),
    (Nanoseconds, "\tm f=1 2000000\r", &["m_f{} 1.0 @2"]),
    (Nanoseconds, "m f=1 1000000\t ", &["m_f{} 1.0 @1"]),
    // Every number form.
    (Nanoseconds, "m f=-12i", &["m_f{} -12.0 @42"]),
    (Nanoseconds, "m f=+7i", &["m_f{} 7.0 @42"]),
    (Nanoseconds, "m f=12u", &["m_f{} 12.0 @42"]),
    (
        Nanoseconds,
        "m f=18446744073709551615u",
        &["m_f{} 1.8446744073709552e19 @42"],
    ),
    (
        Nanoseconds,
        "m f=-9223372036854775808i",
        &["m_f{} -9.223372036854776e18 @42"],
    ),
    (Nanoseconds, "m f=1e3", &["m_f{} 1000.0 @42"]),
    (Nanoseconds, "m f=1.e+78", &["m_f{} 1e78 @42"]),
    (Nanoseconds, "m f=1.E+78", &["m_f{} 1e78 @42"]),
    (
        Nanoseconds,
        "m f=-1.234456e+78",
        &["m_f{} -1.234456e78 @42"],
    ),
    (Nanoseconds, "m f=1E-3", &["m_f{} 0.001 @42"]),
    (Nanoseconds, "m f=.5", &["m_f{} 0.5 @42"]),
    (Nanoseconds, "m f=5.", &["m_f{} 5.0 @42"]),
    (Nanoseconds, "m f=+1.5", &["m_f{} 1.5 @42"]),
    (Nanoseconds, "m f=-0", &["m_f{} -0.0 @42"]),
    (Nanoseconds, "m f=1e-320", &["m_f{} 1e-320 @42"]),
    (
        Nanoseconds,
        "m f=123456789012345678901234567890",
        &["m_f{} 1.2345678901234568e29 @42"],
    ),
    // Booleans, all ten spellings.
    (
        Nanoseconds,
        "m a=t,b=T,c=true,d=True,e=TRUE",
        &[
            "m_a{} 1.0 @42",
            "m_b{} 1.0 @42",
            "m_c{} 1.0 @42",
            "m_d{} 1.0 @42",
            "m_e{} 1.0 @42",
        ],
    ),
    (
        Nanoseconds,
        "m a=f,b=F,c=false,d=False,e=FALSE",
        &[
            "m_a{} 0.0 @42",
            "m_b{} 0.0 @42",
            "m_c{} 0.0 @42",
            "m_d{} 0.0 @42",
            "m_e{} 0.0 @42",
        ],
    ),
    // Strings are skipped, whatever they hold.
    (Nanoseconds, r#"m s="hello",f=1"#, &["m_f{} 1.0 @42"]),
    (
        Nanoseconds,
        r#"m s="a, b=c d",f=2 1000000000"#,
        &["m_f{} 2.0 @1000"],
    ),
    (
        Nanoseconds,
        r#"m s="say \"hi\" \\",f=3"#,
        &["m_f{} 3.0 @42"],
    ),
    (Nanoseconds, r#"m s="C:\path\n",f=4"#, &["m_f{} 4.0 @42"]),
    (Nanoseconds, r#"m s="",f=5"#, &["m_f{} 5.0 @42"]),
    (Nanoseconds, r#"m f=6,s="tail""#, &["m_f{} 6.0 @42"]),
    (Nanoseconds, r#"m s="only strings" 1000000"#, &[]),
    // Escapes.
    (
        Nanoseconds,
        r"my\ meas\,ure f=1",
        &["my_meas_ure_f{} 1.0 @42"],
    ),
    (
        Nanoseconds,
        r"m,tag\ key=tag\,val\=ue\ x f=1",
        &[r#"m_f{tag_key="tag,val=ue x"} 1.0 @42"#],
    ),
    (
        Nanoseconds,
        r"m field\ k\=e\,y=1",
        &["m_field_k_e_y{} 1.0 @42"],
    ),
    (
        Nanoseconds,
        r"m,path=C:\\dir\\ f=1",
        &[r#"m_f{path="C:\\dir\\"} 1.0 @42"#],
    ),
    (
        Nanoseconds,
        r"m,path=C:\dir f=1",
        &[r#"m_f{path="C:\\dir"} 1.0 @42"#],
    ),
    (Nanoseconds, r"m\a f=1", &["m_a_f{} 1.0 @42"]),
    (
        Nanoseconds,
        r#"m,t="x" f=1"#,
        &[r#"m_f{t="\"x\""} 1.0 @42"#],
    ),
    (Nanoseconds, "a=b f=1", &["a_b_f{} 1.0 @42"]),
    // Unicode, and the example of InfluxDB's reference.
    (
        Nanoseconds,
        r"température,pièce=salon\ été valeur=21.5",
        &[r#"temp_rature_valeur{pi_ce="salon été"} 21.5 @42"#],
    ),
    (
        Nanoseconds,
        r#""measurement\ with\ quo⚡️es\ and\ emoji",tag\ key\ with\ sp🚀ces=tag\,value\,with"commas" field_k\ey="string field value, only \" need be esc🍭ped",n=1"#,
        &[
            r#"_measurement_with_quo__es_and_emoji__n{tag_key_with_sp_ces="tag,value,with\"commas\""} 1.0 @42"#,
        ],
    ),
    // Sanitization.
    (
        Nanoseconds,
        "cpu.load,host.name=a-1 user.pct=12.5",
        &[r#"cpu_load_user_pct{host_name="a-1"} 12.5 @42"#],
    ),
    (Nanoseconds, "1wire temp=20", &["_1wire_temp{} 20.0 @42"]),
    (Nanoseconds, "m,9=x 2x=1", &[r#"m_2x{_9="x"} 1.0 @42"#]),
    (
        Nanoseconds,
        "m,b=2,a=1 f=1",
        &[r#"m_f{a="1",b="2"} 1.0 @42"#],
    ),
    // Timestamps: negative, extremes, every precision.
    (Nanoseconds, "m f=1 -1", &["m_f{} 1.0 @-1"]),
    (Nanoseconds, "m f=1 -1000000", &["m_f{} 1.0 @-1"]),
    (Nanoseconds, "m f=1 -1500000", &["m_f{} 1.0 @-2"]),
    (
        Nanoseconds,
        "m f=1 9223372036854775807",
        &["m_f{} 1.0 @9223372036854"],
    ),
    (
        Nanoseconds,
        "m f=1 -9223372036854775808",
        &["m_f{} 1.0 @-9223372036855"],
    ),
    (
        Microseconds,
        "m f=1 1700000000123456",
        &["m_f{} 1.0 @1700000000123"],
    ),
    (Microseconds, "m f=1 -1", &["m_f{} 1.0 @-1"]),
    (
        Milliseconds,
        "m f=1 1700000000123",
        &["m_f{} 1.0 @1700000000123"],
    ),
    (Seconds, "m f=1 1700000000", &["m_f{} 1.0 @1700000000000"]),
    (Seconds, "m f=1 -5", &["m_f{} 1.0 @-5000"]),
    (Minutes, "m f=1 28333333", &["m_f{} 1.0 @1699999980000"]),
    (Hours, "m f=1 472222", &["m_f{} 1.0 @1699999200000"]),
    (Seconds, "m f=1", &["m_f{} 1.0 @42"]),
];

#[test]
fn valid_corpus() {
    assert!(VALID.len() >= 40);
    for (precision, line, want) in VALID {
        let p = parse(line, *precision, DEFAULT_TS, &[]);
        assert_eq!(p.errors, vec![], "{line}");
        assert_eq!(render(&p), *want, "{line}");
        assert_eq!((p.lines, p.samples), (1, want.len()), "{line}");
    }
}

/// Invalid lines, one per line of a body, each with what the error must say.
/// Where InfluxDB is lenient or silent, the choice is written beside it.
const INVALID: &[(&str, &str)] = &[
    ("m", "missing fields"),
    ("m ", "missing fields"),
    ("m,t=a", "missing fields"),
    (",t=a f=1", "missing measurement"),
    ("m, f=1", "empty tag key at column 3"),
    ("m,=a f=1", "empty tag key"),
    ("m,t f=1", r#"tag "t" has no value"#),
    // InfluxDB: "missing tag value".
    ("m,t= f=1", r#"empty value for tag "t""#),
    ("m,t=a=b f=1", r#"unescaped '=' in the value of tag "t""#),
    // InfluxDB keeps the last; a label can't have two values, so refuse.
    ("m,t=a,t=b f=1", r#"tag "t" appears twice"#),
    (
        "m,a.b=1,a_b=2 f=1",
        r#"tags "a.b" and "a_b" both become label "a_b""#,
    ),
    ("m,__name__=x f=1", "reserved for the metric name"),
    ("m f", r#"field "f" has no value"#),
    ("m f,g=1", r#"field "f" has no value"#),
    ("m f=", r#"missing value for field "f""#),
    ("m f= 1", r#"missing value for field "f""#),
    ("m =1", "empty field key at column 3"),
    ("m f=1,", r#"trailing comma after field "f""#),
    ("m f=1, 5", r#"trailing comma after field "f""#),
    ("m f=1,,g=2", "empty field key at column 7"),
    ("  é =1", "empty field key at column 5"),
    (
        "m f=abc",
        r#"invalid value "abc" for field "f": expected a number, boolean or quoted string"#,
    ),
    ("m f=tRUE", "expected a number, boolean or quoted string"),
    ("m f=1x", "expected a number, boolean or quoted string"),
    ("m f=--1", "expected a number, boolean or quoted string"),
    ("m f=1.2.3", "expected a number, boolean or quoted string"),
    ("m f=NaN", "NaN and infinity are not valid"),
    ("m f=-inf", "NaN and infinity are not valid"),
    ("m f=Infinity", "NaN and infinity are not valid"),
    ("m f=1e400", "out of the 64-bit float range"),
    ("m f=1.5i", "expected an integer before the 'i'"),
    ("m f=i", "expected an integer before the 'i'"),
    (
        "m f=9223372036854775808i",
        "integer out of the 64-bit range",
    ),
    ("m f=-1u", "expected an unsigned integer before the 'u'"),
    (
        "m f=18446744073709551616u",
        "unsigned integer out of the 64-bit range",
    ),
    (r#"m s="abc"#, r#"unterminated string value for field "s""#),
    (r#"m s="a\""#, "unterminated string value"),
    (
        r#"m s="a"x,f=1"#,
        r#"unexpected text "x" after the string value of field "s""#,
    ),
    (
        "m f=1 abc",
        r#"invalid timestamp "abc": expected an integer"#,
    ),
    ("m f=1 1.5", "invalid timestamp"),
    // InfluxDB's reference gives this one: "bad timestamp".
    (r#"m f=1 "1466625759000000000""#, "invalid timestamp"),
    ("m f=1 99999999999999999999", "does not fit in 64 bits"),
    (
        "m f=1 123 456",
        r#"unexpected text "456" after the timestamp"#,
    ),
    ("m f=1 1\t2", r#"unexpected text "2" after the timestamp"#),
    // InfluxDB keeps the last value; two samples at one instant are refused.
    ("m f=1,f=2", r#"field "f" appears twice"#),
    (
        "m a.b=1,a_b=2",
        r#"fields "a.b" and "a_b" both become series m_a_b"#,
    ),
    ("m value=1,value=2", r#"field "value" appears twice"#),
];

#[test]
fn invalid_corpus() {
    assert!(INVALID.len() >= 25);
    // Valid lines between the invalid ones must all be kept.
    let mut body = String::new();
    for (line, _) in INVALID {
        body.push_str(line);
        body.push_str("\nok f=1\n");
    }
    let p = parse(&body, Nanoseconds, DEFAULT_TS, &[]);
    assert_eq!(p.errors.len(), INVALID.len(), "{:#?}", p.errors);
    assert_eq!(p.refused, INVALID.len());
    for (e, (line, want)) in p.errors.iter().zip(INVALID) {
        let n = e.line;
        assert_eq!(body.lines().nth(n - 1), Some(*line), "{e:?}");
        assert!(e.message.starts_with(&format!("line {n}: ")), "{e:?}");
        assert!(
            e.message.contains(want),
            "{line:?}: {:?} lacks {want:?}",
            e.message
        );
    }
    assert_eq!(p.lines, 2 * INVALID.len());
    assert_eq!(render(&p), vec!["ok_f{} 1.0 @42"; INVALID.len()]);
}

#[test]
fn timestamp_overflow_depends_on_precision() {
    let line = "m f=1 9223372036854775807";
    let p = parse(line, Seconds, 0, &[]);
    assert_eq!(p.errors.len(), 1);
    assert!(
        p.errors[0].message.contains("precision s) is out of range"),
        "{:?}",
        p.errors
    );
    assert_eq!(parse(line, Hours, 0, &[]).errors.len(), 1);
    assert_eq!(parse(line, Microseconds, 0, &[]).errors, vec![]);
}

#[test]
fn refused_line_leaves_nothing_behind() {
    // `m_a_b` is created while resolving the line, then the line is refused.
    let p = parse("m a.b=1,a_b=2", Nanoseconds, 0, &[]);
    assert!(p.series.is_empty());
    assert_eq!(p.samples, 0);
}

#[test]
fn batches_stay_compact() {
    let body = "# comment\r\n\
                \r\n\
                m,b=1,a=2 f=1 1000000\r\n\
                m,a=2,b=1 f=2 2000000\r\n\
                m,a=2,b=1 f=3,g=4 3000000\n\
                cpu.load v=1 1000000\n\
                cpu_load v=2 2000000\n\
                bad line\n\
                m,b=1,a=2 f=5 4000000";
    let p = parse(body, Nanoseconds, 0, &[]);
    assert_eq!(
        render(&p),
        vec![
            r#"m_f{a="2",b="1"} 1.0 @1"#,
            r#"m_f{a="2",b="1"} 2.0 @2"#,
            r#"m_f{a="2",b="1"} 3.0 @3"#,
            r#"m_f{a="2",b="1"} 5.0 @4"#,
            r#"m_g{a="2",b="1"} 4.0 @3"#,
            "cpu_load_v{} 1.0 @1",
            "cpu_load_v{} 2.0 @2",
        ]
    );
    assert_eq!(p.series.len(), 3);
    assert_eq!((p.lines, p.samples), (7, 7));
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].line, 8);
}

#[test]
fn extra_labels_override_tags() {
    let p = parse(
        "m,topic=t0,site=s f=1\nm,site=s f=2",
        Nanoseconds,
        7,
        &[("topic", "home/pc"), ("site", "")],
    );
    assert_eq!(
        render(&p),
        vec![
            r#"m_f{topic="home/pc"} 1.0 @7"#,
            r#"m_f{topic="home/pc"} 2.0 @7"#
        ]
    );
}

#[test]
fn precision_names() {
    for (s, want) in [
        ("ns", Some(Nanoseconds)),
        ("n", Some(Nanoseconds)),
        ("us", Some(Microseconds)),
        ("u", Some(Microseconds)),
        ("µs", Some(Microseconds)),
        ("ms", Some(Milliseconds)),
        ("s", Some(Seconds)),
        ("m", Some(Minutes)),
        ("h", Some(Hours)),
        ("", None),
        ("sec", None),
        ("MS", None),
    ] {
        assert_eq!(Precision::parse(s), want, "{s:?}");
    }
}

#[test]
fn tags_times_fields_cannot_exhaust_memory() {
    // 1.3 MB whose tags, copied into the series of every field, would take
    // 200 000 × 20 000 labels.
    let mut line = String::from("m");
    for i in 0..20_000 {
        line.push_str(&format!(",t{i}=v"));
    }
    line.push(' ');
    for i in 0..200_000 {
        line.push_str(&format!("f{i}=1,"));
    }
    line.pop();
    let p = parse(&format!("{line}\nok f=1"), Nanoseconds, 0, &[]);
    assert_eq!(p.errors.len(), 1);
    assert!(
        p.errors[0].message.contains("MiB of labels"),
        "{}",
        p.errors[0].message
    );
    assert_eq!(render(&p), vec!["ok_f{} 1.0 @0"]);
}

#[test]
fn long_values_are_cut_in_messages() {
    let line = format!("m f={}", "x".repeat(100_000));
    let p = parse(&line, Nanoseconds, 0, &[]);
    assert!(p.errors[0].message.len() < 200, "{}", p.errors[0].message);
}

// Round trip: format random points as line protocol, parse, compare with
// what the documented mapping says they must become.

#[derive(Clone, Debug)]
enum Value {
    Float(f64, bool),
    Int(i64),
    UInt(u64),
    Bool(bool, usize),
    Str(String),
}

#[derive(Clone, Debug)]
struct Point {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, Value>,
    ts: Option<i64>,
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn format_point(p: &Point) -> String {
    let mut s = String::new();
    escape(&mut s, &p.measurement, &[',', ' ']);
    for (k, v) in &p.tags {
        s.push(',');
        escape(&mut s, k, &[',', '=', ' ']);
        s.push('=');
        escape(&mut s, v, &[',', '=', ' ']);
    }
    for (i, (k, v)) in p.fields.iter().enumerate() {
        s.push(if i == 0 { ' ' } else { ',' });
        escape(&mut s, k, &[',', '=', ' ']);
        s.push('=');
        match v {
            Value::Float(f, true) => s.push_str(&format!("{f:e}")),
            Value::Float(f, false) => s.push_str(&format!("{f}")),
            Value::Int(i) => s.push_str(&format!("{i}i")),
            Value::UInt(u) => s.push_str(&format!("{u}u")),
            Value::Bool(b, spelling) => {
                let t = ["t", "T", "true", "True", "TRUE"];
                let f = ["f", "F", "false", "False", "FALSE"];
                s.push_str(if *b { t[*spelling] } else { f[*spelling] });
            }
            Value::Str(text) => {
                s.push('"');
                escape(&mut s, text, &['"']);
                s.push('"');
            }
        }
    }
    if let Some(ts) = p.ts {
        s.push_str(&format!(" {ts}"));
    }
    s
}

type Samples = BTreeMap<String, Vec<(i64, u64)>>;

/// What `p` must become, or `None` if it must be refused.
fn expect(p: &Point, precision: Precision, out: &mut Samples) -> Option<()> {
    let mut labels = Labels::empty();
    for (k, v) in &p.tags {
        let name = sanitize_label_name(k);
        if name == METRIC_NAME || labels.get(&name).is_some() {
            return None;
        }
        labels.set(&name, v);
    }
    let ts = match p.ts {
        None => DEFAULT_TS,
        Some(ts) => precision.to_ms(ts)?,
    };
    let metric = sanitize_metric_name(&p.measurement);
    let mut samples = Vec::new();
    for (k, v) in &p.fields {
        let v = match v {
            Value::Float(f, _) => *f,
            Value::Int(i) => *i as f64,
            Value::UInt(u) => *u as f64,
            Value::Bool(b, _) => f64::from(u8::from(*b)),
            Value::Str(_) => continue,
        };
        let name = if k == "value" {
            metric.to_string()
        } else {
            sanitize_metric_name(&format!("{metric}_{k}")).into_owned()
        };
        let mut l = labels.clone();
        l.set(METRIC_NAME, &name);
        let key = l.to_string();
        if samples.iter().any(|(k, _)| *k == key) {
            return None;
        }
        samples.push((key, (ts, v.to_bits())));
    }
    for (k, s) in samples {
        out.entry(k).or_default().push(s);
    }
    Some(())
}

fn point() -> impl Strategy<Value = Point> {
    // Names mix plain, special and non-ASCII characters, so that escaping and
    // sanitization collisions (`a.b` vs `a_b`) both happen.
    let name = "[a-c_.=, \\\\\"é⚡\t]{1,4}|value|__name__";
    let value = prop_oneof![
        (
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            any::<bool>()
        )
            .prop_map(|(f, e)| Value::Float(f, e)),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        (any::<bool>(), 0..5usize).prop_map(|(b, s)| Value::Bool(b, s)),
        "[a-z ,=\"\\\\é]{0,6}".prop_map(Value::Str),
    ];
    (
        // Not starting with '#' (a comment) nor whitespace (trimmed).
        "[a-c_.=,\\\\\"é⚡][a-c_.=, \\\\\"é⚡\t]{0,4}",
        prop::collection::btree_map(name, "[a-c ,=\\\\\"é\t]{1,4}", 0..4),
        prop::collection::btree_map(name, value, 1..5),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(measurement, tags, fields, ts)| Point {
            measurement,
            tags,
            fields,
            ts,
        })
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(vec![
        Nanoseconds,
        Microseconds,
        Milliseconds,
        Seconds,
        Minutes,
        Hours,
    ])
}

proptest! {
    #[test]
    fn round_trip(points in prop::collection::vec(point(), 1..6), precision in precision(), crlf: bool) {
        let lines: Vec<String> = points.iter().map(format_point).collect();
        let body = lines.join(if crlf { "\r\n" } else { "\n" });
        let mut want = Samples::new();
        let mut want_errors = Vec::new();
        for (i, p) in points.iter().enumerate() {
            if expect(p, precision, &mut want).is_none() {
                want_errors.push(i + 1);
            }
        }
        let parsed = parse(&body, precision, DEFAULT_TS, &[]);
        let got_errors: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        prop_assert_eq!(got_errors, want_errors, "{:?}", parsed.errors);
        let mut got = Samples::new();
        for s in &parsed.series {
            let e = got.entry(s.labels.to_string()).or_default();
            prop_assert!(e.is_empty(), "series {} appears twice", s.labels);
            e.extend(s.samples.iter().map(|(t, v)| (*t, v.to_bits())));
        }
        prop_assert_eq!(got, want);
    }
}
