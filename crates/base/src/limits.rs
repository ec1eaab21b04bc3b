//! The input limits every query language shares — PromQL, series selectors
//! (`match[]`), InfluxQL and search queries — and the one error that says
//! which was exceeded, where and why. They are checked by cheap iterative
//! scans *before* any recursive parser sees the text, so no input can
//! exhaust a thread's stack (a stack overflow aborts the whole process) or
//! make a parser spend quadratic time.
//!
//! What each language counts:
//!
//! | language | nesting ([`MAX_DEPTH`]) | items ([`MAX_ITEMS`]) |
//! |---|---|---|
//! | PromQL, `match[]` | `(` and `[` outside strings and comments | operators (`+ - * / % ^ < > = !`, `and or unless atan2`) outside `{…}` |
//! | InfluxQL | `(` tokens | operator tokens, `AND` / `OR`, commas (list items) |
//! | search | `(` outside phrases; also every `(` and `NOT` anywhere, at most [`MAX_DEPTH`] | terms (runs of text between spaces and parentheses) |
//! | series search (autocomplete) | — | words |
//!
//! Every language is held to [`MAX_QUERY_BYTES`]; the `match[]` selectors
//! of one request together too, and there are at most [`MAX_SELECTORS`] of
//! them. Time and memory while a query runs are bounded by `[query]` in the
//! configuration (`timeout`, `max_samples`, `export_timeout`,
//! `max_export_samples`), which the query and HTTP crates apply.

use std::fmt;

/// Bytes of query text (each PromQL, InfluxQL or search query; all
/// `match[]` selectors of one request together).
pub const MAX_QUERY_BYTES: usize = 256 * 1024;
/// Nesting levels (parentheses, brackets, function calls, and for search
/// also `NOT`s): parsers and evaluators recurse once per level.
pub const MAX_DEPTH: usize = 250;
/// Operators of a PromQL or InfluxQL query, terms of a search query. The
/// PromQL parser needs time quadratic in long operator chains, and every
/// operator is a level of the evaluated tree.
pub const MAX_ITEMS: usize = 1000;
/// `match[]` selectors in one request.
pub const MAX_SELECTORS: usize = 1000;

/// A query refused before it was parsed. The message names what was too
/// large, by how much and where (a byte offset into the text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    TooDeep {
        what: &'static str,
        limit: usize,
        /// Byte offset of the opening that went past the limit, when known.
        at: Option<usize>,
    },
    TooMany {
        what: &'static str,
        /// What was counted: "operators", "terms", "match[] selectors".
        items: &'static str,
        limit: usize,
        at: Option<usize>,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |f: &mut fmt::Formatter<'_>, at: &Option<usize>| match at {
            Some(b) => write!(f, " (at byte {b})"),
            None => Ok(()),
        };
        match self {
            LimitError::TooLong { what, len, limit } => write!(
                f,
                "{what} is {len} bytes long, more than the limit of {limit} bytes"
            ),
            LimitError::TooDeep {
                what,
                limit,
                at: pos,
            } => {
                write!(f, "{what} nests deeper than {limit} levels")?;
                at(f, pos)
            }
            LimitError::TooMany {
                what,
                items,
                limit,
                at: pos,
            } => {
                write!(f, "{what} has more than {limit} {items}")?;
                at(f, pos)?;
                f.write_str("; split it up")
            }
        }
    }
}

impl std::error::Error for LimitError {}

impl crate::HasKind for LimitError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidArgument
    }
}

impl LimitError {
    /// The same error with its position translated (e.g. from a character
    /// index to a byte offset).
    pub fn map_at(self, f: impl Fn(usize) -> usize) -> LimitError {
        match self {
            LimitError::TooDeep { what, limit, at } => LimitError::TooDeep {
                what,
                limit,
                at: at.map(f),
            },
            LimitError::TooMany {
                what,
                items,
                limit,
                at,
            } => LimitError::TooMany {
                what,
                items,
                limit,
                at: at.map(f),
            },
            e => e,
        }
    }
}

/// Refuses text over [`MAX_QUERY_BYTES`].
pub fn check_length(what: &'static str, q: &str) -> Result<(), LimitError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(LimitError::TooLong {
            what,
            len: q.len(),
            limit: MAX_QUERY_BYTES,
        });
    }
    Ok(())
}

/// Counts nesting and items while a scanner walks a query; each language's
/// scan (here, or over its own tokens) feeds it.
#[derive(Debug)]
pub struct Scan {
    what: &'static str,
    items_name: &'static str,
    depth: usize,
    items: usize,
}

impl Scan {
    /// `what` names the query in messages ("query", "InfluxQL query"),
    /// `items_name` what [`Scan::item`] counts ("operators").
    pub fn new(what: &'static str, items_name: &'static str) -> Scan {
        Scan {
            what,
            items_name,
            depth: 0,
            items: 0,
        }
    }

    /// One level deeper at byte `at`.
    pub fn open(&mut self, at: usize) -> Result<(), LimitError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(LimitError::TooDeep {
                what: self.what,
                limit: MAX_DEPTH,
                at: Some(at),
            });
        }
        Ok(())
    }

    /// One level up (an unbalanced close is the parser's to report).
    pub fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// One more operator (or term) at byte `at`.
    pub fn item(&mut self, at: usize) -> Result<(), LimitError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(LimitError::TooMany {
                what: self.what,
                items: self.items_name,
                limit: MAX_ITEMS,
                at: Some(at),
            });
        }
        Ok(())
    }
}

/// Checks a PromQL query or series selector (`what`: "query", "match[]
/// selector") before the parser sees it: length, nesting of `(` and `[`,
/// and operators. Strings (`"…"`, `'…'`, `` `…` ``) and `#` comments are
/// skipped the way PromQL's lexer skips them.
pub fn check_promql(what: &'static str, q: &str) -> Result<(), LimitError> {
    check_length(what, q)?;
    let mut scan = Scan::new(what, "operators");
    let b = q.as_bytes();
    let mut i = 0;
    let mut in_braces = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // The literal, with backslash escapes except in `raw`.
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => in_braces = true,
            b'}' => in_braces = false,
            b'(' | b'[' => scan.open(i)?,
            b')' | b']' => scan.close(),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if !in_braces => {
                scan.item(i)?
            }
            c if c.is_ascii_alphabetic() && !in_braces => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if matches!(&q[start..i], "and" | "or" | "unless" | "atan2") {
                    scan.item(start)?;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Checks the `match[]` selectors of one request together: how many, and
/// their total length (each is also checked by [`check_promql`] when it is
/// parsed).
pub fn check_selectors(selectors: &[&str]) -> Result<(), LimitError> {
    if selectors.len() > MAX_SELECTORS {
        return Err(LimitError::TooMany {
            what: "the request",
            items: "match[] selectors",
            limit: MAX_SELECTORS,
            at: None,
        });
    }
    let len = selectors.iter().map(|s| s.len()).sum::<usize>();
    if len > MAX_QUERY_BYTES {
        return Err(LimitError::TooLong {
            what: "match[] (all selectors together)",
            len,
            limit: MAX_QUERY_BYTES,
        });
    }
    Ok(())
}

/// Checks a list of whitespace-separated words (the series search of the
/// dashboard's autocomplete): length and how many words.
pub fn check_words(what: &'static str, q: &str) -> Result<(), LimitError> {
    check_length(what, q)?;
    let mut scan = Scan::new(what, "words");
    for w in q.split_whitespace() {
        scan.item(w.as_ptr() as usize - q.as_ptr() as usize)?;
    }
    Ok(())
}

/// Checks a search query (tantivy's query syntax) before tantivy's parser,
/// which recurses on every `(` and every `NOT`, sees it: length, nesting of
/// parentheses outside phrases, terms, and at most [`MAX_DEPTH`] `(` and
/// `NOT` in all. The last is counted anywhere (in phrases, regular
/// expressions and escapes too), so that no reading of the syntax can
/// recurse deeper than that.
pub fn check_search(q: &str) -> Result<(), LimitError> {
    const WHAT: &str = "search query";
    check_length(WHAT, q)?;
    // Nesting first: its message is the most precise; then the groups,
    // then the terms.
    let scanned = scan_search(q);
    if let Err(e @ LimitError::TooDeep { .. }) = scanned {
        return Err(e);
    }
    let b = q.as_bytes();
    let mut groups = 0usize;
    for (at, _) in b
        .iter()
        .enumerate()
        .filter(|&(at, &c)| c == b'(' || b[at..].starts_with(b"NOT"))
    {
        groups += 1;
        if groups > MAX_DEPTH {
            return Err(LimitError::TooMany {
                what: WHAT,
                items: "parentheses and NOT operators",
                limit: MAX_DEPTH,
                at: Some(at),
            });
        }
    }
    scanned
}

/// Nesting outside phrases, and terms, of a search query.
fn scan_search(q: &str) -> Result<(), LimitError> {
    let mut scan = Scan::new("search query", "terms");
    let b = q.as_bytes();
    // In a phrase: its quote character.
    let mut quote: Option<u8> = None;
    // Within a term (text since the last space or parenthesis).
    let mut in_term = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(qc) = quote {
            match c {
                b'\\' => i += 1,
                c if c == qc => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'(' => {
                scan.open(i)?;
                in_term = false;
            }
            b')' => {
                scan.close();
                in_term = false;
            }
            c if c.is_ascii_whitespace() => in_term = false,
            _ => {
                if !in_term {
                    scan.item(i)?;
                    in_term = true;
                }
                match c {
                    b'\\' => i += 1,
                    b'"' | b'\'' => quote = Some(c),
                    _ => {}
                }
            }
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(open: &str, inner: &str, close: &str, n: usize) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn promql_nesting_operators_and_length() {
        assert_eq!(
            check_promql("query", &deep("(", "m", ")", MAX_DEPTH)),
            Ok(())
        );
        assert_eq!(
            check_promql("query", &deep("(", "m", ")", 3000))
                .unwrap_err()
                .to_string(),
            "query nests deeper than 250 levels (at byte 250)"
        );
        assert_eq!(
            check_promql("match[] selector", &deep("abs(", "m", ")", 300))
                .unwrap_err()
                .to_string(),
            "match[] selector nests deeper than 250 levels (at byte 1003)"
        );
        // Brackets in strings and comments do not count.
        let quoted = format!("m{{a=\"{}\"}} # {}", "(".repeat(5000), "[".repeat(5000));
        assert_eq!(check_promql("query", &quoted), Ok(()));
        let chain = vec!["m"; 1002].join("+");
        assert_eq!(
            check_promql("query", &chain).unwrap_err().to_string(),
            "query has more than 1000 operators (at byte 2001); split it up"
        );
        let words = vec!["m"; 1002].join(" or ");
        assert!(matches!(
            check_promql("query", &words),
            Err(LimitError::TooMany { .. })
        ));
        // Matchers are not operators.
        let matchers = format!(
            "m{{{}}}",
            (0..2000)
                .map(|i| format!("l{i}!=\"x\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(check_promql("query", &matchers), Ok(()));
        let long = "m".repeat(MAX_QUERY_BYTES + 1);
        assert_eq!(
            check_promql("query", &long).unwrap_err().to_string(),
            "query is 262145 bytes long, more than the limit of 262144 bytes"
        );
    }

    #[test]
    fn search_nesting_groups_and_terms() {
        assert_eq!(check_search("(a OR b) AND NOT c"), Ok(()));
        assert_eq!(check_search(&deep("(", "a", ")", MAX_DEPTH)), Ok(()));
        assert_eq!(
            check_search(&deep("(", "a", ")", 3000))
                .unwrap_err()
                .to_string(),
            "search query nests deeper than 250 levels (at byte 250)"
        );
        let nots = format!("{}a", "NOT ".repeat(3000));
        assert_eq!(
            check_search(&nots).unwrap_err().to_string(),
            "search query has more than 250 parentheses and NOT operators (at byte 1000); split it up"
        );
        // Closing parentheses inside phrases cannot hide depth: every `(`
        // counts towards the total.
        let tricky = "(((((\")))))\" ".repeat(100);
        assert!(matches!(
            check_search(&tricky),
            Err(LimitError::TooMany { .. }) | Err(LimitError::TooDeep { .. })
        ));
        let tricky = format!("{} /\")/", "( /\")/ ".repeat(300));
        assert!(check_search(&tricky).is_err());
        // Parentheses in a phrase do not nest.
        assert_eq!(check_search("\"(a)\" b"), Ok(()));
        let terms = vec!["a"; 1001].join(" ");
        assert_eq!(
            check_search(&terms).unwrap_err().to_string(),
            "search query has more than 1000 terms (at byte 2000); split it up"
        );
        assert_eq!(check_search(&vec!["a"; 1000].join(" ")), Ok(()));
    }

    #[test]
    fn words() {
        assert_eq!(check_words("series search", " temp  garage "), Ok(()));
        let many = vec!["a"; 1001].join("  ");
        assert_eq!(
            check_words("series search", &many).unwrap_err().to_string(),
            "series search has more than 1000 words (at byte 3000); split it up"
        );
    }

    #[test]
    fn selectors_together() {
        let many = vec!["m"; MAX_SELECTORS + 1];
        assert_eq!(
            check_selectors(&many).unwrap_err().to_string(),
            "the request has more than 1000 match[] selectors; split it up"
        );
        assert_eq!(check_selectors(&many[..MAX_SELECTORS]), Ok(()));
        let big = "m".repeat(MAX_QUERY_BYTES / 2 + 1);
        assert!(matches!(
            check_selectors(&[&big, &big]),
            Err(LimitError::TooLong { .. })
        ));
    }

    #[test]
    fn positions_translate() {
        let e = LimitError::TooDeep {
            what: "InfluxQL query",
            limit: MAX_DEPTH,
            at: Some(3),
        };
        assert_eq!(
            e.map_at(|c| c * 2).to_string(),
            "InfluxQL query nests deeper than 250 levels (at byte 6)"
        );
    }
}
