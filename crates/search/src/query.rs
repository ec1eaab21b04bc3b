//! Queries: tantivy's query syntax over the days a time range covers, hits
//! merged by time or relevance, and counts over time for the histogram.

use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::columnar::Column;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery};
use tantivy::query_grammar::{self, Occur as GrammarOccur, UserInputAst, UserInputLeaf};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, DocId, Order, Score, Searcher, SegmentOrdinal, SegmentReader, TantivyDocument, Term,
};

use super::history::{stored_text, StoredMessage};
use super::period::Period;
use super::{SearchError, Shared};

/// Hits a request may skip and return together.
pub const MAX_WINDOW: usize = 10_000;
/// Buckets a histogram may have.
pub const MAX_BUCKETS: i64 = 11_000;
/// Characters of payload around the matches in `highlight`.
const HIGHLIGHT_CHARS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Newest first.
    Time,
    /// Best match first (BM25; scores of different days are compared as is).
    Relevance,
}

#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub q: String,
    /// ms, inclusive.
    pub start: i64,
    pub end: i64,
    pub limit: usize,
    pub offset: usize,
    pub sort: Sort,
}

#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// ms since the epoch.
    pub time: i64,
    pub topic: String,
    pub payload: String,
    pub client_id: String,
    pub qos: u64,
    pub retained: bool,
    /// The payload around the matches, HTML-escaped, matches in `<b>…</b>`.
    pub highlight: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    pub total: u64,
    pub hits: Vec<Hit>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub total: u64,
    /// `[bucket start ms, count]`, every bucket of `[start, end]`.
    pub buckets: Vec<(i64, u64)>,
}

/// `q` as a tantivy query; empty or `*` matches everything. The limits
/// every query language shares (`base::limits`) are checked first: tantivy's
/// parser recurses on every `(` and `NOT`, and a stack overflow would abort
/// the whole process.
pub(super) fn parse(shared: &Shared, q: &str) -> Result<Box<dyn Query>, SearchError> {
    base::limits::check_search(q)?;
    let q = q.trim();
    if q.is_empty() || q == "*" {
        return Ok(Box::new(AllQuery));
    }
    let ast = match query_grammar::parse_query(q) {
        Ok(ast) => ast,
        Err(_) => {
            // The strict grammar says only that it failed; the lenient one
            // says what and where.
            let (_, errors) = query_grammar::parse_query_lenient(q);
            let reason = errors
                .first()
                .map(|e| format!("syntax error: {} at position {}", e.message, e.pos))
                .unwrap_or_else(|| "syntax error".into());
            return Err(SearchError::BadQuery(reason));
        }
    };
    check_regexes(&ast)?;
    shared
        .parser
        .build_query_from_user_input_ast(only_excluding_is_all_but(lift_not(ast), true))
        .map_err(|e| SearchError::BadQuery(e.to_string()))
}

/// A regex (`payload:/…/`) whose automaton has more steps than this is
/// refused before tantivy builds it: tantivy turns a regex into a DFA of up
/// to 1 000 states, each made by running every step of the NFA for each of
/// 256 bytes, so the work grows with the NFA's size. A 70-byte regex found
/// by fuzzing took 9 s of CPU; at this limit the worst known pattern takes a
/// few hundred milliseconds. Typical ones (`temp.*kitchen`, `[a-z]+[0-9]`)
/// are far below it; Unicode classes are large (`\w` alone is about 14 000).
pub const MAX_REGEX_STEPS: u64 = 2_500;

fn check_regexes(ast: &UserInputAst) -> Result<(), SearchError> {
    match ast {
        UserInputAst::Clause(items) => items.iter().try_for_each(|(_, a)| check_regexes(a)),
        UserInputAst::Boost(a, _) => check_regexes(a),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Regex { pattern, .. } => {
                // A regex that does not parse is left to tantivy's message.
                let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
                    return Ok(());
                };
                let steps = regex_steps(&hir);
                if steps > MAX_REGEX_STEPS {
                    let shown: String = pattern.chars().take(40).collect();
                    return Err(SearchError::BadQuery(format!(
                        "the regex /{shown}{}/ is too complex: it compiles to {steps} steps, \
                         the limit is {MAX_REGEX_STEPS}; make it shorter or more specific \
                         (Unicode classes such as \\w and \\d are large: [a-zA-Z0-9_] is small)",
                        if shown.len() < pattern.len() {
                            "…"
                        } else {
                            ""
                        }
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        },
    }
}

/// The number of NFA steps tantivy-fst's compiler makes of a regex
/// (`tantivy_fst::regex::compile`): literal bytes, one per UTF-8 byte
/// range of a class plus the splits and jumps between ranges, repetitions
/// unrolled.
fn regex_steps(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    use regex_syntax::utf8::Utf8Sequences;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Class(Class::Bytes(_)) => 0,
        HirKind::Literal(l) => l.0.len() as u64,
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| {
                let sequences: u64 = Utf8Sequences::new(r.start(), r.end())
                    .map(|s| s.len() as u64 + 2)
                    .sum();
                sequences + 2
            })
            .fold(0, u64::saturating_add),
        HirKind::Capture(c) => regex_steps(&c.sub),
        HirKind::Concat(v) => v.iter().map(regex_steps).fold(0, u64::saturating_add),
        HirKind::Alternation(v) => v
            .iter()
            .map(regex_steps)
            .fold(2 * v.len() as u64, u64::saturating_add),
        HirKind::Repetition(r) => {
            let one = regex_steps(&r.sub);
            let required = u64::from(r.min).saturating_mul(one);
            let optional = match r.max {
                Some(max) => {
                    u64::from(max.saturating_sub(r.min)).saturating_mul(one.saturating_add(1))
                }
                None => one.saturating_add(2),
            };
            required.saturating_add(optional)
        }
    }
}

/// `a AND NOT b` parses as `+a +(-b)`, and a clause of only exclusions
/// matches nothing in tantivy: lift such clauses into their parent (`+a -b`).
fn lift_not(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (occur, sub) in items {
                let sub = lift_not(sub);
                match sub {
                    UserInputAst::Clause(inner)
                        if !matches!(occur, Some(GrammarOccur::MustNot | GrammarOccur::Should))
                            && !inner.is_empty()
                            && inner.iter().all(|(o, _)| *o == Some(GrammarOccur::MustNot)) =>
                    {
                        out.extend(inner)
                    }
                    sub => out.push((occur, sub)),
                }
            }
            UserInputAst::Clause(out)
        }
        UserInputAst::Boost(inner, b) => UserInputAst::Boost(Box::new(lift_not(*inner)), b),
        leaf => leaf,
    }
}

/// `NOT b` alone means everything but `b` (tantivy refuses it otherwise).
fn only_excluding_is_all_but(ast: UserInputAst, top: bool) -> UserInputAst {
    match ast {
        UserInputAst::Clause(mut items)
            if top
                && !items.is_empty()
                && items.iter().all(|(o, _)| *o == Some(GrammarOccur::MustNot)) =>
        {
            items.push((
                Some(GrammarOccur::Must),
                UserInputAst::Leaf(Box::new(UserInputLeaf::All)),
            ));
            UserInputAst::Clause(items)
        }
        ast => ast,
    }
}

/// The days overlapping `[start, end]`, newest first.
fn periods(shared: &Shared, start: i64, end: i64) -> Vec<Arc<Period>> {
    let p = shared.periods.read();
    p.values()
        .rev()
        .filter(|p| p.start_ms() <= end && p.end_ms() >= start)
        .cloned()
        .collect()
}

/// `query` limited to `[start, end]` where the day reaches beyond it.
fn within(shared: &Shared, query: &dyn Query, p: &Period, start: i64, end: i64) -> Box<dyn Query> {
    if start <= p.start_ms() && end >= p.end_ms() {
        return query.box_clone();
    }
    let range = RangeQuery::new(
        Bound::Included(Term::from_field_i64(shared.fields.time, start)),
        Bound::Included(Term::from_field_i64(shared.fields.time, end)),
    );
    Box::new(BooleanQuery::new(vec![
        (Occur::Must, query.box_clone()),
        (Occur::Must, Box::new(range)),
    ]))
}

pub(super) fn search(shared: &Shared, req: &SearchRequest) -> Result<SearchResult, SearchError> {
    if req.start > req.end {
        return Err(SearchError::BadRequest(
            "invalid parameter \"end\": end is before start".into(),
        ));
    }
    let want = req.offset.saturating_add(req.limit);
    if want > MAX_WINDOW {
        return Err(SearchError::BadRequest(format!(
            "offset + limit must be at most {MAX_WINDOW}"
        )));
    }
    let query = parse(shared, &req.q)?;
    let periods = periods(shared, req.start, req.end);
    let searchers: Vec<Searcher> = periods.iter().map(|p| p.reader.searcher()).collect();
    let mut total = 0u64;
    // (sort key, period, address); higher keys first.
    let mut best: Vec<(f64, usize, DocAddress)> = Vec::new();
    for (i, (p, searcher)) in periods.iter().zip(&searchers).enumerate() {
        let q = within(shared, &*query, p, req.start, req.end);
        // Newest first: once `want` hits are newer than this whole day, it
        // only adds to the count.
        let full = want == 0
            || req.sort == Sort::Time
                && best.len() >= want
                && best.last().is_some_and(|b| b.0 > p.end_ms() as f64);
        if full {
            total += searcher.search(&*q, &Count)? as u64;
            continue;
        }
        match req.sort {
            Sort::Time => {
                let top = TopDocs::with_limit(want).order_by_fast_field::<i64>("time", Order::Desc);
                let (n, docs) = searcher.search(&*q, &(Count, top))?;
                total += n as u64;
                best.extend(
                    docs.into_iter()
                        .map(|(t, a)| (t.unwrap_or(i64::MIN) as f64, i, a)),
                );
            }
            Sort::Relevance => {
                let top = TopDocs::with_limit(want).order_by_score();
                let (n, docs) = searcher.search(&*q, &(Count, top))?;
                total += n as u64;
                best.extend(docs.into_iter().map(|(s, a)| (s as f64, i, a)));
            }
        }
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        best.truncate(want);
    }
    let f = &shared.fields;
    let mut snippets: Vec<Option<SnippetGenerator>> = (0..periods.len()).map(|_| None).collect();
    let mut hits = Vec::new();
    for &(key, i, addr) in best.iter().skip(req.offset) {
        let doc: TantivyDocument = searchers[i].doc(addr)?;
        let m = StoredMessage::of(f, &doc);
        let payload = m.payload;
        if snippets[i].is_none() {
            let mut g = SnippetGenerator::create(&searchers[i], &*query, f.payload)?;
            g.set_max_num_chars(HIGHLIGHT_CHARS);
            snippets[i] = Some(g);
        }
        let snippet = snippets[i].as_ref().map(|g| g.snippet(&payload));
        let highlight = match snippet {
            Some(s) if !s.highlighted().is_empty() => s.to_html(),
            _ => escape_html(cut(&payload, HIGHLIGHT_CHARS)),
        };
        hits.push(Hit {
            time: m.time_ms,
            topic: m.topic,
            client_id: stored_text(&doc, f.client_id),
            qos: m.qos.into(),
            retained: m.retain,
            payload,
            highlight,
            score: (req.sort == Sort::Relevance).then_some(key as f32),
        });
    }
    Ok(SearchResult { total, hits })
}

pub(super) fn histogram(
    shared: &Shared,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Histogram, SearchError> {
    if step <= 0 {
        return Err(SearchError::BadRequest(
            "invalid parameter \"step\": must be positive".into(),
        ));
    }
    if start > end {
        return Err(SearchError::BadRequest(
            "invalid parameter \"end\": end is before start".into(),
        ));
    }
    // Checked: the extremes of i64 must not wrap around into a wrong answer.
    let n = end
        .checked_sub(start)
        .and_then(|span| (span / step).checked_add(1))
        .filter(|&n| n <= MAX_BUCKETS)
        .ok_or_else(|| {
            SearchError::BadRequest(format!(
                "[start, end] in steps of {step} ms makes more than {MAX_BUCKETS} buckets; use a larger step or a shorter range"
            ))
        })?;
    let query = parse(shared, q)?;
    let mut counts = vec![0u64; n as usize];
    for p in periods(shared, start, end) {
        let searcher = p.reader.searcher();
        let q = within(shared, &*query, &p, start, end);
        let c = searcher.search(
            &*q,
            &Buckets {
                start,
                step,
                n: n as usize,
            },
        )?;
        for (a, b) in counts.iter_mut().zip(c) {
            *a += b;
        }
    }
    Ok(Histogram {
        start,
        end,
        step,
        total: counts.iter().sum(),
        buckets: counts
            .into_iter()
            .enumerate()
            // At most `end`: n − 1 steps from `start` fit in [start, end].
            .map(|(i, c)| (start + i as i64 * step, c))
            .collect(),
    })
}

/// Counts matching documents per time bucket from the `time` fast field.
struct Buckets {
    start: i64,
    step: i64,
    n: usize,
}

struct SegmentBuckets {
    column: Column<i64>,
    start: i64,
    step: i64,
    counts: Vec<u64>,
}

impl Collector for Buckets {
    type Fruit = Vec<u64>;
    type Child = SegmentBuckets;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentBuckets> {
        Ok(SegmentBuckets {
            column: reader.fast_fields().i64("time")?,
            start: self.start,
            step: self.step,
            counts: vec![0; self.n],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut out = vec![0; self.n];
        for f in fruits {
            for (a, b) in out.iter_mut().zip(f) {
                *a += b;
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for SegmentBuckets {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(t) = self.column.first(doc) {
            let Some(i) = t.checked_sub(self.start).map(|d| d.div_euclid(self.step)) else {
                return;
            };
            if let Some(c) = usize::try_from(i).ok().and_then(|i| self.counts.get_mut(i)) {
                *c += 1;
            }
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}

fn cut(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regex_too_costly_to_compile_is_refused_at_once() {
        // Found by the search_query fuzz target: tantivy took 9 s of CPU to
        // compile this regex. Now it is refused before.
        let input = include_bytes!("testdata/fuzz-regex-timeout");
        let q = String::from_utf8_lossy(input);
        let began = std::time::Instant::now();
        match crate::parse_query(&q) {
            Err(SearchError::BadQuery(e)) => assert!(e.contains("is too complex"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(began.elapsed() < std::time::Duration::from_secs(1));
        for (q, steps) in [("payload:/\\w+/", 13_942), ("payload:/(.*a){40}/", 2_200)] {
            let hir = regex_syntax::Parser::new()
                .parse(q.split('/').nth(1).unwrap())
                .unwrap();
            assert_eq!(regex_steps(&hir), steps, "{q}");
        }
        assert!(crate::parse_query("payload:/\\w+/").is_err());
        // Found by the fuzzer next: nested repetitions (`a++++…`) double
        // the count each level; it saturates instead of overflowing (and,
        // in a release build, wrapping to a small count that would pass).
        let nested = format!("payload:/|.m%agt{}/", "+".repeat(130));
        match crate::parse_query(&nested) {
            Err(SearchError::BadQuery(e)) => assert!(e.contains("too complex"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(crate::parse_query("payload:/temp.*kitchen/").is_ok());
        assert!(crate::parse_query("payload:/[a-z]+[0-9]{2}/").is_ok());
    }

    #[test]
    fn hostile_queries_are_refused_before_tantivy_parses_them() {
        let refused = |q: &str| match crate::parse_query(q) {
            Err(SearchError::Limit(e)) => e.to_string(),
            other => panic!("{q:.40}…: {other:?}"),
        };
        let deep = format!("{}a{}", "(".repeat(3000), ")".repeat(3000));
        assert_eq!(
            refused(&deep),
            "search query nests deeper than 250 levels (at byte 250)"
        );
        let nots = format!("{}a", "NOT ".repeat(3000));
        assert_eq!(
            refused(&nots),
            "search query has more than 250 parentheses and NOT operators (at byte 1000); split it up"
        );
        // At the limit tantivy's parser runs within a test thread's 2 MiB
        // stack (a blocking thread's): strict, then lenient for the message.
        let at_limit = format!("{}a{}", "(".repeat(250), ")".repeat(250));
        assert!(crate::parse_query(&at_limit).is_ok());
        let at_limit = format!("{}a{}", "(NOT ".repeat(125), ")".repeat(124));
        assert!(matches!(
            crate::parse_query(&at_limit),
            Err(SearchError::BadQuery(_))
        ));
        let at_limit = format!("{}a", "NOT ".repeat(250));
        let _ = crate::parse_query(&at_limit);
    }
}
