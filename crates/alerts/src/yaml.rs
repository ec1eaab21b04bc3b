//! A YAML document as a tree whose every node knows its line and column,
//! so that a rule file's errors name the line of the rule, the expression
//! or the label at fault, as Prometheus' do (it reads rule files as
//! yaml.v3 nodes for the same reason). Built from yaml-rust2's event
//! parser without recursion; anchors and aliases are refused (a rule file
//! does not need them, and expanding them is how a small file becomes a
//! huge tree).

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this is refused: a rule file is four levels deep.
const MAX_DEPTH: usize = 32;

/// Where a node starts: line and column, both from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Pos {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A plain `~`, `null` or nothing.
    Null,
    /// Any scalar, as written (quoted or not; YAML's types are the reader's
    /// business here: a label value `1` is the string "1").
    Scalar(String),
    Seq(Vec<Node>),
    /// In the order written.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A syntax error: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// The kind of node, for messages ("a mapping", "a list").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Scalar(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: (*e.marker()).into(),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Value::Null,
    }))
}

/// A container being filled: its node, and for a mapping the key waiting
/// for its value.
struct Open {
    node: Node,
    pending_key: Option<Node>,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                pos,
                message: message.into(),
            });
        }
    }

    fn open(&mut self, pos: Pos, value: Value) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(pos, format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Open {
            node: Node { pos, value },
            pending_key: None,
        });
    }

    fn close(&mut self) {
        if let Some(open) = self.stack.pop() {
            self.add(open.node);
        }
    }

    /// Puts a finished node into its parent (or makes it the document).
    fn add(&mut self, node: Node) {
        let Some(parent) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut parent.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match parent.pending_key.take() {
                None => parent.pending_key = Some(node),
                Some(key) => {
                    let duplicate = key.as_str().and_then(|k| {
                        entries
                            .iter()
                            .find(|(other, _)| other.as_str() == Some(k))
                            .map(|(other, _)| (k.to_string(), other.pos))
                    });
                    if let Some((k, first)) = duplicate {
                        let message =
                            format!("mapping key {k:?} already defined at line {}", first.line);
                        let pos = key.pos;
                        entries.push((key, node));
                        self.fail(pos, message);
                        return;
                    }
                    entries.push((key, node));
                }
            },
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::Alias(_) => self.fail(pos, "aliases (*name) are not supported in rule files"),
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                self.fail(pos, "anchors (&name) are not supported in rule files")
            }
            Event::Scalar(text, style, _, _) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if null {
                    Value::Null
                } else {
                    Value::Scalar(text)
                };
                self.add(Node { pos, value });
            }
            Event::SequenceStart(..) => self.open(pos, Value::Seq(Vec::new())),
            Event::MappingStart(..) => self.open(pos, Value::Map(Vec::new())),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_values() {
        let doc =
            parse("groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up == 0\n")
                .unwrap();
        let Value::Map(top) = &doc.value else {
            panic!("{doc:?}")
        };
        assert_eq!(top[0].0.as_str(), Some("groups"));
        let Value::Seq(groups) = &top[0].1.value else {
            panic!()
        };
        assert_eq!(groups[0].pos.line, 2);
        let Value::Map(g) = &groups[0].value else {
            panic!()
        };
        let Value::Seq(rules) = &g[1].1.value else {
            panic!()
        };
        let Value::Map(r) = &rules[0].value else {
            panic!()
        };
        assert_eq!(r[1].1.as_str(), Some("up == 0"));
        assert_eq!(r[1].1.pos, Pos { line: 5, col: 15 });
    }

    #[test]
    fn refusals() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("already defined at line 1"), "{e:?}");
        let e = parse("a: &x [1]\nb: *x\n").unwrap_err();
        assert!(e.message.contains("anchors"), "{e:?}");
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("'null'").unwrap().value, Value::Scalar("null".into()));
    }
}
