//! `WHERE` conditions evaluated per row (or per series, for `SHOW`): tag
//! and field comparisons, regex matches and time comparisons; and which
//! fields a condition reads.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use super::error::InfluxError;
use super::parse::Expr;
use super::time::{is_time, time_operand};
use store::Labels;

/// Compiles a query's regex, size-limited so a hostile pattern cannot eat
/// memory.
pub(super) fn compile(pattern: &str) -> Result<Regex, InfluxError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|source| InfluxError::InvalidRegex {
            pattern: pattern.to_string(),
            source,
        })
}

/// Compiled regexes of a condition, by pattern.
pub(super) struct Regexes(BTreeMap<String, Regex>);

impl Regexes {
    pub(super) fn compile(e: Option<&Expr>) -> Result<Regexes, InfluxError> {
        fn walk(e: &Expr, out: &mut BTreeMap<String, Regex>) -> Result<(), InfluxError> {
            match e {
                Expr::Regex(r) if !out.contains_key(r) => {
                    out.insert(r.clone(), compile(r)?);
                }
                Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                    walk(a, out)?;
                    walk(b, out)?;
                }
                Expr::Call(_, args) => {
                    for a in args {
                        walk(a, out)?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut m = BTreeMap::new();
        if let Some(e) = e {
            walk(e, &mut m)?;
        }
        Ok(Regexes(m))
    }
}

/// What a condition sees: the time, the series' tags, the row's fields.
pub(super) struct Row<'a> {
    pub(super) time: i64,
    pub(super) tags: &'a Labels,
    pub(super) fields: &'a [(String, Option<f64>)],
}

impl<'a> Row<'a> {
    pub(super) fn tags_only(tags: &'a Labels) -> Row<'a> {
        Row {
            time: 0,
            tags,
            fields: &[],
        }
    }
}

#[derive(Clone, Debug)]
enum V {
    Num(f64),
    Str(String),
    Bool(bool),
    Regex(String),
    Null,
}

fn truthy(v: &V) -> bool {
    matches!(v, V::Bool(true))
}

/// Whether `e` holds for `row`.
pub(super) fn holds(e: &Expr, row: &Row, now: i64, rx: &Regexes) -> bool {
    truthy(&eval(e, row, now, rx))
}

fn eval(e: &Expr, row: &Row, now: i64, rx: &Regexes) -> V {
    match e {
        Expr::And(a, b) => {
            V::Bool(truthy(&eval(a, row, now, rx)) && truthy(&eval(b, row, now, rx)))
        }
        Expr::Or(a, b) => V::Bool(truthy(&eval(a, row, now, rx)) || truthy(&eval(b, row, now, rx))),
        Expr::Binary(a, op, b)
            if matches!(*op, "=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~") =>
        {
            // Time comparisons convert the other side to a time.
            if is_time(a) || is_time(b) {
                let (t, other, flip) = if is_time(a) {
                    (row.time, b, false)
                } else {
                    (row.time, a, true)
                };
                let Some(x) = time_operand(other, now) else {
                    return V::Bool(false);
                };
                let (l, r) = if flip { (x, t) } else { (t, x) };
                return V::Bool(match *op {
                    "=" => l == r,
                    "!=" => l != r,
                    "<" => l < r,
                    "<=" => l <= r,
                    ">" => l > r,
                    ">=" => l >= r,
                    _ => false,
                });
            }
            let (l, r) = (eval(a, row, now, rx), eval(b, row, now, rx));
            V::Bool(match (&l, &r, *op) {
                (V::Str(s), V::Regex(p), "=~") => rx.0.get(p).is_some_and(|re| re.is_match(s)),
                (V::Str(s), V::Regex(p), "!~") => !rx.0.get(p).is_some_and(|re| re.is_match(s)),
                (V::Str(x), V::Str(y), op) => cmp(x.as_str().cmp(y.as_str()), op),
                (V::Num(x), V::Num(y), op) => match x.partial_cmp(y) {
                    Some(o) => cmp(o, op),
                    None => op == "!=",
                },
                _ => false,
            })
        }
        Expr::Binary(a, op, b) => match (eval(a, row, now, rx), eval(b, row, now, rx)) {
            (V::Num(x), V::Num(y)) => V::Num(match *op {
                "+" => x + y,
                "-" => x - y,
                _ => f64::NAN,
            }),
            _ => V::Null,
        },
        Expr::Ident(n) => {
            if n.eq_ignore_ascii_case("time") {
                return V::Num(row.time as f64);
            }
            if let Some((_, v)) = row.fields.iter().find(|(f, _)| f == n) {
                return v.map_or(V::Null, V::Num);
            }
            V::Str(row.tags.get(n).unwrap_or("").to_string())
        }
        Expr::Str(s) => V::Str(s.clone()),
        Expr::Number(n) => V::Num(*n),
        Expr::Duration(d) => V::Num(*d as f64),
        Expr::Regex(r) => V::Regex(r.clone()),
        Expr::Now => V::Num(now as f64),
        _ => V::Null,
    }
}

fn cmp(o: std::cmp::Ordering, op: &str) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "=" => o == Equal,
        "!=" => o != Equal,
        "<" => o == Less,
        "<=" => o != Greater,
        ">" => o == Greater,
        ">=" => o != Less,
        _ => false,
    }
}

/// The fields among `fields` that condition `e` reads.
pub(super) fn condition_fields(e: Option<&Expr>, fields: &BTreeSet<String>) -> Vec<String> {
    fn walk(e: &Expr, fields: &BTreeSet<String>, out: &mut Vec<String>) {
        match e {
            Expr::Ident(n) if fields.contains(n) => out.push(n.clone()),
            Expr::Binary(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                walk(a, fields, out);
                walk(b, fields, out);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(e) = e {
        walk(e, fields, &mut out);
    }
    out
}
