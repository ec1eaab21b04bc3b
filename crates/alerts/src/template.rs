//! Alert label and annotation templates: the part of Go's text/template
//! that Prometheus rule files use, with Prometheus' data and functions.
//!
//! Data: `$labels` / `.Labels` (the alert's sample labels), `$value` /
//! `.Value`, `$externalLabels` / `.ExternalLabels`, `$externalURL` /
//! `.ExternalURL`; in notification templates (a webhook's `body`, an MQTT
//! topic) also `$annotations` / `.Annotations` and `$status` / `.Status`
//! (`firing` or `resolved`; both empty in rule templates). Actions: `{{ pipeline }}` where a pipeline is a command
//! or `command | function …`, `{{ if pipeline }} … {{ else if … }} … {{ else
//! }} … {{ end }}`, `{{- trimmed -}}` and `{{/* comments */}}`. Functions:
//! humanize, humanize1024, humanizeDuration, humanizePercentage,
//! humanizeTimestamp, printf, toUpper, toLower, title, match, reReplaceAll,
//! stripPort, eq, ne, lt, le, gt, ge, and, or, not, and `toJson` (a value
//! as a JSON literal, quoted and escaped: Alertmanager's). What is outside this
//! (range, with, define, `query`) is refused when the rule is loaded, with
//! where and why, never at notification time.
//!
//! Numbers are written as Go writes them (`fmt.Sprint`, `%.4g`), so an
//! annotation reads the same in perch as in Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a template may read.
#[derive(Clone, Debug, Default)]
pub struct Data<'a> {
    pub labels: BTreeMap<&'a str, &'a str>,
    pub value: f64,
    pub external_labels: BTreeMap<&'a str, &'a str>,
    pub external_url: &'a str,
    pub annotations: BTreeMap<&'a str, &'a str>,
    pub status: &'a str,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    nodes: Vec<TNode>,
}

#[derive(Clone, Debug, PartialEq)]
enum TNode {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<TNode>)>,
        otherwise: Vec<TNode>,
    },
}

/// `cmd | fn arg | fn`: each later command gets the previous result as
/// its last argument.
#[derive(Clone, Debug, PartialEq)]
struct Pipeline(Vec<Command>);

#[derive(Clone, Debug, PartialEq)]
enum Command {
    Operand(Operand),
    Call(String, Vec<Operand>),
}

#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Str(String),
    Num(f64),
    Bool(bool),
    /// `$labels.x`, `.Labels.x`, `$value`…: the root and the field path.
    Field(Root, Vec<String>),
    Paren(Box<Pipeline>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Root {
    Labels,
    Value,
    ExternalLabels,
    ExternalUrl,
    Annotations,
    Status,
}

/// A value while a template runs.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Map(BTreeMap<String, String>),
    /// A missing map key: prints as `<no value>`, is false.
    Missing,
}

/// Why a template cannot be used: byte offset in the template and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (at byte {} of the template)",
            self.message, self.offset
        )
    }
}

const FUNCTIONS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "printf",
    "toUpper",
    "toLower",
    "title",
    "match",
    "reReplaceAll",
    "stripPort",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "toJson",
];

/// Templates longer than this are refused: annotations are a few lines.
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// `if` nesting and parenthesised pipelines deeper than this are refused.
const MAX_NESTING: usize = 16;

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError {
                offset: 0,
                message: format!("template is longer than {MAX_TEMPLATE_BYTES} bytes"),
            });
        }
        let tokens = split(text)?;
        let mut pos = 0;
        let nodes = parse_nodes(&tokens, &mut pos, 0)?;
        if let Some(t) = tokens.get(pos) {
            return Err(TemplateError {
                offset: t.offset,
                message: format!("unexpected {{{{{}}}}}", t.action.as_deref().unwrap_or("")),
            });
        }
        Ok(Template { nodes })
    }

    /// Whether the template is plain text (no actions).
    pub fn is_plain(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, TNode::Text(_)))
    }

    /// Runs the template. An error (a function given what it cannot take)
    /// is written into the result, as Prometheus does: the alert still
    /// fires, its annotation says what went wrong.
    pub fn expand(&self, data: &Data) -> String {
        let mut out = String::new();
        if let Err(e) = run_nodes(&self.nodes, data, &mut out) {
            out = format!("<error expanding template: {e}>");
        }
        out
    }
}

/// Expands `text` once (for places that keep no parsed template).
pub fn expand(text: &str, data: &Data) -> Result<String, TemplateError> {
    Ok(Template::parse(text)?.expand(data))
}

struct Token {
    offset: usize,
    /// `None` for text, the action's inside for `{{ … }}`.
    action: Option<String>,
    text: String,
}

/// Splits into text and actions, applying `{{-` and `-}}` trimming.
fn split(text: &str) -> Result<Vec<Token>, TemplateError> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("{{") else {
            let t = if trim_next { rest.trim_start() } else { rest };
            tokens.push(Token {
                offset,
                action: None,
                text: t.to_string(),
            });
            break;
        };
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let inner_start = start + 2;
        let Some(len) = find_action_end(&rest[inner_start..]) else {
            return Err(TemplateError {
                offset: offset + start,
                message: "unclosed action: no }}".into(),
            });
        };
        let mut inner = &rest[inner_start..inner_start + len];
        if inner.starts_with("- ") || inner == "-" {
            before = before.trim_end();
            inner = &inner[1..];
        }
        trim_next = false;
        if inner.ends_with(" -") {
            trim_next = true;
            inner = &inner[..inner.len() - 1];
        }
        if !before.is_empty() {
            tokens.push(Token {
                offset,
                action: None,
                text: before.to_string(),
            });
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            tokens.push(Token {
                offset: offset + start,
                action: Some(inner.to_string()),
                text: String::new(),
            });
        }
        let consumed = inner_start + len + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(tokens)
}

/// The length of an action's inside up to its `}}`, skipping quoted strings.
fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse_nodes(
    tokens: &[Token],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<TNode>, TemplateError> {
    let mut nodes = Vec::new();
    while let Some(t) = tokens.get(*pos) {
        let Some(action) = &t.action else {
            nodes.push(TNode::Text(t.text.clone()));
            *pos += 1;
            continue;
        };
        let word = action.split_whitespace().next().unwrap_or("");
        match word {
            "end" | "else" => return Ok(nodes),
            "if" => {
                if depth >= MAX_NESTING {
                    return Err(err(t.offset, "if nested too deeply"));
                }
                let mut branches = Vec::new();
                let mut otherwise = Vec::new();
                let mut cond = parse_pipeline(action["if".len()..].trim(), t.offset)?;
                *pos += 1;
                loop {
                    let body = parse_nodes(tokens, pos, depth + 1)?;
                    let Some(closer) = tokens.get(*pos) else {
                        return Err(err(t.offset, "if without {{end}}"));
                    };
                    let closing = closer.action.as_deref().unwrap_or("").trim();
                    *pos += 1;
                    if closing == "end" {
                        branches.push((cond, body));
                        break;
                    }
                    if closing == "else" {
                        branches.push((cond, body));
                        otherwise = parse_nodes(tokens, pos, depth + 1)?;
                        match tokens.get(*pos) {
                            Some(e) if e.action.as_deref().map(str::trim) == Some("end") => {
                                *pos += 1;
                                break;
                            }
                            _ => return Err(err(closer.offset, "else without {{end}}")),
                        }
                    }
                    if let Some(c) = closing.strip_prefix("else if ") {
                        branches.push((cond, body));
                        cond = parse_pipeline(c.trim(), closer.offset)?;
                        continue;
                    }
                    return Err(err(closer.offset, format!("unexpected {{{{{closing}}}}}")));
                }
                nodes.push(TNode::If {
                    branches,
                    otherwise,
                });
            }
            "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                return Err(err(
                    t.offset,
                    format!("{{{{{word}}}}} is not supported in perch's alert templates"),
                ));
            }
            _ => {
                nodes.push(TNode::Action(parse_pipeline(action, t.offset)?));
                *pos += 1;
            }
        }
    }
    Ok(nodes)
}

fn err(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        offset,
        message: message.into(),
    }
}

/// Lexes an action into words: strings, numbers, fields, `(`, `)`, `|`.
fn lex(s: &str, offset: usize) -> Result<Vec<String>, TemplateError> {
    let mut words = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            b'(' | b')' | b'|' => i += 1,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err(err(offset, "unterminated quoted string"));
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(err(offset, "unterminated raw string"));
                }
                i += 1;
            }
            _ => {
                while i < b.len() && !b[i].is_ascii_whitespace() && !b"()|".contains(&b[i]) {
                    i += 1;
                }
            }
        }
        words.push(s[start..i].to_string());
    }
    Ok(words)
}

fn parse_pipeline(s: &str, offset: usize) -> Result<Pipeline, TemplateError> {
    let words = lex(s, offset)?;
    let mut i = 0;
    let p = pipeline(&words, &mut i, offset, 0)?;
    if i < words.len() {
        return Err(err(offset, format!("unexpected {:?}", words[i])));
    }
    Ok(p)
}

fn pipeline(
    words: &[String],
    i: &mut usize,
    offset: usize,
    depth: usize,
) -> Result<Pipeline, TemplateError> {
    if depth > MAX_NESTING {
        return Err(err(offset, "parentheses nested too deeply"));
    }
    if words
        .get(*i)
        .is_some_and(|w| w.starts_with('$') && words.get(*i + 1).map(String::as_str) == Some(":="))
    {
        return Err(err(
            offset,
            "declaring variables is not supported in perch's alert templates",
        ));
    }
    let mut commands = Vec::new();
    loop {
        let mut parts = Vec::new();
        while let Some(w) = words.get(*i) {
            match w.as_str() {
                "|" | ")" => break,
                "(" => {
                    *i += 1;
                    let inner = pipeline(words, i, offset, depth + 1)?;
                    if words.get(*i).map(String::as_str) != Some(")") {
                        return Err(err(offset, "unclosed parenthesis"));
                    }
                    *i += 1;
                    parts.push(Part::Operand(Operand::Paren(Box::new(inner))));
                }
                _ => {
                    parts.push(word(w, offset)?);
                    *i += 1;
                }
            }
        }
        let mut parts = parts.into_iter();
        let command = match parts.next() {
            None => return Err(err(offset, "missing value in an action")),
            Some(Part::Func(name)) => {
                let args = parts
                    .map(|p| match p {
                        Part::Operand(o) => Ok(o),
                        Part::Func(f) => Err(err(
                            offset,
                            format!("function {f} used as an argument; put it in parentheses"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Command::Call(name, args)
            }
            Some(Part::Operand(o)) => {
                if parts.next().is_some() {
                    return Err(err(offset, "a value cannot take arguments"));
                }
                Command::Operand(o)
            }
        };
        if !commands.is_empty() && matches!(command, Command::Operand(_)) {
            return Err(err(offset, "only a function can follow |"));
        }
        commands.push(command);
        if words.get(*i).map(String::as_str) == Some("|") {
            *i += 1;
            continue;
        }
        return Ok(Pipeline(commands));
    }
}

enum Part {
    Func(String),
    Operand(Operand),
}

fn word(w: &str, offset: usize) -> Result<Part, TemplateError> {
    if let Some(s) = w.strip_prefix('"') {
        let s = &s[..s.len() - 1];
        return unquote(s)
            .map(|s| Part::Operand(Operand::Str(s)))
            .ok_or_else(|| err(offset, format!("bad escape in {w}")));
    }
    if let Some(s) = w.strip_prefix('`') {
        return Ok(Part::Operand(Operand::Str(s[..s.len() - 1].to_string())));
    }
    if w == "true" || w == "false" {
        return Ok(Part::Operand(Operand::Bool(w == "true")));
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return w
            .parse::<f64>()
            .map(|n| Part::Operand(Operand::Num(n)))
            .map_err(|_| err(offset, format!("bad number {w}")));
    }
    if w.starts_with('$') || w.starts_with('.') {
        let (root, rest) = if let Some(r) = w.strip_prefix("$labels") {
            (Root::Labels, r)
        } else if let Some(r) = w.strip_prefix(".Labels") {
            (Root::Labels, r)
        } else if let Some(r) = w.strip_prefix("$externalLabels") {
            (Root::ExternalLabels, r)
        } else if let Some(r) = w.strip_prefix(".ExternalLabels") {
            (Root::ExternalLabels, r)
        } else if let Some(r) = w.strip_prefix("$externalURL") {
            (Root::ExternalUrl, r)
        } else if let Some(r) = w.strip_prefix(".ExternalURL") {
            (Root::ExternalUrl, r)
        } else if let Some(r) = w.strip_prefix("$annotations") {
            (Root::Annotations, r)
        } else if let Some(r) = w.strip_prefix(".Annotations") {
            (Root::Annotations, r)
        } else if let Some(r) = w.strip_prefix("$status") {
            (Root::Status, r)
        } else if let Some(r) = w.strip_prefix(".Status") {
            (Root::Status, r)
        } else if let Some(r) = w.strip_prefix("$value") {
            (Root::Value, r)
        } else if let Some(r) = w.strip_prefix(".Value") {
            (Root::Value, r)
        } else {
            return Err(err(
                offset,
                format!(
                    "undefined variable or field {w}: templates can read $labels, $value, \
                     $externalLabels, $externalURL (and in a webhook body $annotations and $status)"
                ),
            ));
        };
        if !rest.is_empty() && !rest.starts_with('.') {
            return Err(err(offset, format!("undefined variable {w}")));
        }
        let path: Vec<String> = rest
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let is_map = matches!(
            root,
            Root::Labels | Root::ExternalLabels | Root::Annotations
        );
        if path.len() > usize::from(is_map) {
            return Err(err(offset, format!("{w}: no such field")));
        }
        return Ok(Part::Operand(Operand::Field(root, path)));
    }
    if w == "query" {
        return Err(err(
            offset,
            "the query function is not supported in perch's alert templates",
        ));
    }
    if FUNCTIONS.contains(&w) {
        return Ok(Part::Func(w.to_string()));
    }
    Err(err(offset, format!("function {w:?} not defined")))
}

/// Go's interpreted string escapes.
fn unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            _ => return None,
        });
    }
    Some(out)
}

fn run_nodes(nodes: &[TNode], data: &Data, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            TNode::Text(t) => out.push_str(t),
            TNode::Action(p) => {
                let v = run_pipeline(p, data)?;
                out.push_str(&print(&v));
            }
            TNode::If {
                branches,
                otherwise,
            } => {
                let mut taken = false;
                for (cond, body) in branches {
                    if truthy(&run_pipeline(cond, data)?) {
                        run_nodes(body, data, out)?;
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    run_nodes(otherwise, data, out)?;
                }
            }
        }
    }
    Ok(())
}

fn run_pipeline(p: &Pipeline, data: &Data) -> Result<Val, String> {
    let mut last: Option<Val> = None;
    for c in &p.0 {
        last = Some(match c {
            Command::Operand(o) => operand(o, data)?,
            Command::Call(name, args) => {
                let mut vals = args
                    .iter()
                    .map(|a| operand(a, data))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(prev) = last.take() {
                    vals.push(prev);
                }
                call(name, vals)?
            }
        });
    }
    last.ok_or_else(|| "empty pipeline".to_string())
}

fn operand(o: &Operand, data: &Data) -> Result<Val, String> {
    Ok(match o {
        Operand::Str(s) => Val::Str(s.clone()),
        Operand::Num(n) => Val::Num(*n),
        Operand::Bool(b) => Val::Bool(*b),
        Operand::Paren(p) => run_pipeline(p, data)?,
        Operand::Field(root, path) => {
            let map = match root {
                Root::Value => return Ok(Val::Num(data.value)),
                Root::ExternalUrl => return Ok(Val::Str(data.external_url.to_string())),
                Root::Status => return Ok(Val::Str(data.status.to_string())),
                Root::Annotations => &data.annotations,
                Root::Labels => &data.labels,
                Root::ExternalLabels => &data.external_labels,
            };
            match path.first() {
                None => Val::Map(
                    map.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                Some(key) => map
                    .get(key.as_str())
                    .map_or(Val::Missing, |v| Val::Str(v.to_string())),
            }
        }
    })
}

fn truthy(v: &Val) -> bool {
    match v {
        Val::Str(s) => !s.is_empty(),
        Val::Num(n) => *n != 0.0,
        Val::Bool(b) => *b,
        Val::Map(m) => !m.is_empty(),
        Val::Missing => false,
    }
}

fn print(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Num(n) => go_float(*n, None),
        Val::Bool(b) => b.to_string(),
        Val::Missing => "<no value>".into(),
        Val::Map(m) => {
            let mut s = String::from("map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                let _ = write!(s, "{k}:{v}");
            }
            s.push(']');
            s
        }
    }
}

/// A number from a value as Prometheus' functions convert it
/// (`strconv.ParseFloat` for strings).
fn number(v: &Val, func: &str) -> Result<f64, String> {
    match v {
        Val::Num(n) => Ok(*n),
        Val::Str(s) => {
            parse_go_float(s).ok_or_else(|| format!("{func}: cannot convert {s:?} to a number"))
        }
        other => Err(format!(
            "{func}: cannot convert {} to a number",
            print(other)
        )),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn string(v: &Val) -> String {
    print(v)
}

fn call(name: &str, args: Vec<Val>) -> Result<Val, String> {
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{name} wants {n} argument(s), got {}", args.len()))
        }
    };
    Ok(match name {
        "humanize" => {
            want(1)?;
            Val::Str(humanize(number(&args[0], name)?))
        }
        "humanize1024" => {
            want(1)?;
            Val::Str(humanize1024(number(&args[0], name)?))
        }
        "humanizeDuration" => {
            want(1)?;
            Val::Str(humanize_duration(number(&args[0], name)?))
        }
        "humanizePercentage" => {
            want(1)?;
            Val::Str(format!(
                "{}%",
                go_float(number(&args[0], name)? * 100.0, Some(4))
            ))
        }
        "humanizeTimestamp" => {
            want(1)?;
            Val::Str(humanize_timestamp(number(&args[0], name)?))
        }
        "toJson" => {
            want(1)?;
            Val::Str(match &args[0] {
                Val::Num(n) if n.is_finite() => serde_json::json!(n).to_string(),
                Val::Num(_) | Val::Missing => "null".into(),
                Val::Bool(b) => b.to_string(),
                Val::Map(m) => serde_json::to_string(m).unwrap_or_default(),
                Val::Str(s) => serde_json::to_string(s).unwrap_or_default(),
            })
        }
        "toUpper" => {
            want(1)?;
            Val::Str(string(&args[0]).to_uppercase())
        }
        "toLower" => {
            want(1)?;
            Val::Str(string(&args[0]).to_lowercase())
        }
        "title" => {
            want(1)?;
            Val::Str(title(&string(&args[0])))
        }
        "stripPort" => {
            want(1)?;
            let s = string(&args[0]);
            Val::Str(strip_port(&s))
        }
        "match" => {
            want(2)?;
            let re = regex::Regex::new(&string(&args[0])).map_err(|e| format!("match: {e}"))?;
            Val::Bool(re.is_match(&string(&args[1])))
        }
        "reReplaceAll" => {
            want(3)?;
            let re =
                regex::Regex::new(&string(&args[0])).map_err(|e| format!("reReplaceAll: {e}"))?;
            Val::Str(
                re.replace_all(&string(&args[2]), string(&args[1]).as_str())
                    .into_owned(),
            )
        }
        "printf" => {
            if args.is_empty() {
                return Err("printf wants a format".into());
            }
            Val::Str(printf(&string(&args[0]), &args[1..]))
        }
        "not" => {
            want(1)?;
            Val::Bool(!truthy(&args[0]))
        }
        "and" => args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Bool(true)),
        "or" => args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Bool(false)),
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let ord = compare(&args[0], &args[1], name)?;
            use std::cmp::Ordering::*;
            Val::Bool(match (name, ord) {
                ("eq", o) => o == Some(Equal),
                ("ne", o) => o != Some(Equal),
                ("lt", o) => o == Some(Less),
                ("le", o) => matches!(o, Some(Less | Equal)),
                ("gt", o) => o == Some(Greater),
                (_, o) => matches!(o, Some(Greater | Equal)),
            })
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn compare(a: &Val, b: &Val, func: &str) -> Result<Option<std::cmp::Ordering>, String> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => Ok(x.partial_cmp(y)),
        (Val::Str(x), Val::Str(y)) => Ok(Some(x.cmp(y))),
        (Val::Bool(x), Val::Bool(y)) if func == "eq" || func == "ne" => Ok(Some(x.cmp(y))),
        (Val::Missing, _) | (_, Val::Missing) => Err(format!("{func}: a value is missing")),
        (x, y) => Err(format!(
            "{func}: incompatible types for comparison: {} and {}",
            print(x),
            print(y)
        )),
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '\'' && c != '_';
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    }
    match s.rfind(':') {
        Some(i) if s[..i].find(':').is_none() => s[..i].to_string(),
        _ => s.to_string(),
    }
}

/// Go's `printf` for the verbs annotations use: `%s %v %d %f %g %e %q %%`
/// with width and precision.
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' || n == '-' || n == '+' || n == ' ' || n == '0' {
                spec.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let (width, precision) = match spec.split_once('.') {
            Some((w, p)) => (w.to_string(), p.parse::<usize>().ok().or(Some(0))),
            None => (spec.clone(), None),
        };
        let left = width.contains('-');
        let zero = width.starts_with('0');
        let width: usize = width
            .trim_matches(|c| c == '-' || c == '+' || c == ' ' || c == '0')
            .parse()
            .unwrap_or(0);
        let text = match verb {
            's' | 'v' => {
                let s = print(arg);
                match precision {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            'q' => format!("{:?}", print(arg)),
            'd' => match number(arg, "printf") {
                Ok(n) if n.is_finite() => format!("{}", n.trunc() as i64),
                _ => format!("%!d({})", print(arg)),
            },
            'f' | 'F' => match number(arg, "printf") {
                Ok(n) => go_fixed(n, precision.unwrap_or(6)),
                Err(_) => format!("%!f({})", print(arg)),
            },
            'g' => match number(arg, "printf") {
                Ok(n) => go_float(n, precision),
                Err(_) => format!("%!g({})", print(arg)),
            },
            'e' => match number(arg, "printf") {
                Ok(n) => go_exp(n, precision.unwrap_or(6)),
                Err(_) => format!("%!e({})", print(arg)),
            },
            other => format!("%!{other}({})", print(arg)),
        };
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && !matches!(verb, 's' | 'v' | 'q') {
            let (sign, digits) = match text.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("", text.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    let extra: Vec<String> = args.map(print).collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn non_finite(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        None
    }
}

fn go_fixed(v: f64, precision: usize) -> String {
    non_finite(v).unwrap_or_else(|| format!("{v:.precision$}"))
}

fn go_exp(v: f64, precision: usize) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    let s = format!("{v:.precision$e}");
    fix_exponent(&s)
}

/// Rust writes `1.5e3`, Go `1.5e+03`.
fn fix_exponent(s: &str) -> String {
    let Some((mantissa, exp)) = s.split_once('e') else {
        return s.to_string();
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// Go's `%g` (`precision` given) and `%v` / `fmt.Sprint` (`None`: the
/// shortest representation that reads back the same).
pub fn go_float(v: f64, precision: Option<usize>) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // The significant digits and the decimal exponent, from Rust's
    // correctly rounded scientific notation.
    let sci = match precision {
        None => format!("{:e}", v.abs()),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v.abs()),
    };
    let (mantissa, exp) = sci.split_once('e').expect("scientific notation");
    let exp: i32 = exp.parse().expect("an exponent");
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let eprec = match precision {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > nd && nd >= dp {
                nd
            } else {
                p
            }
        }
    };
    let sign = if v < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let mut m = digits[..1].to_string();
        if nd > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!("{sign}{}", fix_exponent(&format!("{m}e{exp}")));
    }
    // Fixed notation with the digits we have.
    let mut s = String::from(sign);
    if dp <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-dp) as usize));
        s.push_str(&digits);
    } else if dp >= nd {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', (dp - nd) as usize));
    } else {
        s.push_str(&digits[..dp as usize]);
        s.push('.');
        s.push_str(&digits[dp as usize..]);
    }
    s
}

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_float(v, Some(4)))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_float(v, Some(4)))
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_float(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let total = v as i64;
        let (s, m, h, d) = (
            total % 60,
            (total / 60) % 60,
            (total / 3600) % 24,
            total / 86_400,
        );
        if d != 0 {
            return format!("{sign}{d}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_float(v, Some(4)));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_float(v, Some(4)))
}

/// As Go prints a `time.Time` in UTC: `2024-03-01 12:00:00 +0000 UTC`.
fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, Some(4));
    }
    let secs = v.floor() as i64;
    let nanos = ((v - v.floor()) * 1e9).round() as u32;
    match chrono::DateTime::from_timestamp(secs, nanos.min(999_999_999)) {
        Some(t) => {
            let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
            if nanos > 0 {
                let frac = format!("{nanos:09}");
                let _ = write!(s, ".{}", frac.trim_end_matches('0'));
            }
            s.push_str(" +0000 UTC");
            s
        }
        None => go_float(v, Some(4)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: f64) -> Data<'static> {
        Data {
            labels: [("instance", "host:9100"), ("device", "freezer")]
                .into_iter()
                .collect(),
            value,
            ..Default::default()
        }
    }

    fn run(t: &str, value: f64) -> String {
        Template::parse(t)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .expand(&data(value))
    }

    #[test]
    fn go_numbers() {
        // What Go's fmt.Sprint and %.4g print for these.
        for (v, sprint, g4) in [
            (21.5, "21.5", "21.5"),
            (1e6, "1e+06", "1e+06"),
            (123456.0, "123456", "1.235e+05"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "1e-05"),
            (1234.5678, "1234.5678", "1235"),
            (-3.0, "-3", "-3"),
            (100.0, "100", "100"),
            (0.5, "0.5", "0.5"),
            (f64::NAN, "NaN", "NaN"),
            (f64::INFINITY, "+Inf", "+Inf"),
        ] {
            assert_eq!(go_float(v, None), sprint, "Sprint({v})");
            assert_eq!(go_float(v, Some(4)), g4, "%.4g of {v}");
        }
    }

    #[test]
    fn prometheus_functions() {
        assert_eq!(humanize(1234567.0), "1.235M");
        assert_eq!(humanize(0.0012), "1.2m");
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize1024(1048576.0), "1Mi");
        assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(1.5), "1.5s");
        assert_eq!(humanize_duration(0.25), "250ms");
        assert_eq!(
            humanize_timestamp(1_700_000_000.0),
            "2023-11-14 22:13:20 +0000 UTC"
        );
        assert_eq!(run("{{ humanizePercentage 0.123456 }}", 0.0), "12.35%");
    }

    #[test]
    fn labels_values_pipelines() {
        assert_eq!(
            run("{{ $labels.device }} is at {{ $value }} °C", -3.5),
            "freezer is at -3.5 °C"
        );
        assert_eq!(run("{{ .Labels.instance | stripPort }}", 0.0), "host");
        assert_eq!(run("{{ $value | humanize }}B", 2048.0), "2.048kB");
        assert_eq!(run("{{ printf \"%.1f\" $value }}", 2.26), "2.3");
        assert_eq!(run("{{ printf \"%d%%\" $value }}", 93.7), "93%");
        assert_eq!(run("{{ $labels.nothing }}", 0.0), "<no value>");
        assert_eq!(
            run(
                "{{ if gt $value 80.0 }}hot{{ else if gt $value 20.0 }}warm{{ else }}cold{{ end }}",
                50.0
            ),
            "warm"
        );
        assert_eq!(run("a  {{- \" b \" -}}  c", 0.0), "a b c");
        assert_eq!(run("{{/* a comment */}}x", 0.0), "x");
        assert_eq!(
            run("{{ toUpper (printf \"%s!\" $labels.device) }}", 0.0),
            "FREEZER!"
        );
    }

    #[test]
    fn refusals() {
        for (t, why) in [
            ("{{ $labels.device", "unclosed action"),
            ("{{ range $labels }}{{ end }}", "not supported"),
            ("{{ query \"up\" }}", "query function"),
            ("{{ nosuch $value }}", "not defined"),
            ("{{ $foo }}", "undefined variable"),
            ("{{ if $value }}x", "without {{end}}"),
            ("{{ $value | 3 }}", "only a function"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.message.contains(why), "{t}: {e}");
        }
        // An error while running is written into the text.
        assert!(run("{{ humanize \"abc\" }}", 0.0).contains("cannot convert"));
    }
}
