//! A parser for the read-only InfluxQL subset perch answers: `SELECT` with
//! fields, `*` and the functions `mean min max sum count first last`, `WHERE`
//! on time, tags and fields, `GROUP BY time(…)` and tags, `fill(…)`,
//! `ORDER BY time`, `LIMIT`/`OFFSET`; `SHOW MEASUREMENTS`, `SHOW TAG KEYS`,
//! `SHOW FIELD KEYS`, `SHOW TAG VALUES WITH KEY …`. Anything else is an
//! error naming what is not supported, never a guess.

use std::fmt;

use thiserror::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Token {
    Ident(String),
    /// A double-quoted identifier (never a keyword).
    Quoted(String),
    Str(String),
    Number(f64),
    Integer(i64),
    /// A duration literal in nanoseconds.
    Duration(i64),
    Regex(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Semicolon,
    Dot,
    Star,
    Eof,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s}"),
            Token::Quoted(s) => write!(f, "\"{s}\""),
            Token::Str(s) => write!(f, "'{s}'"),
            Token::Number(n) => write!(f, "{n}"),
            Token::Integer(n) => write!(f, "{n}"),
            Token::Duration(n) => write!(f, "{n}ns"),
            Token::Regex(r) => write!(f, "/{r}/"),
            Token::Op(o) => write!(f, "{o}"),
            Token::LParen => write!(f, "("),
            Token::RParen => write!(f, ")"),
            Token::Comma => write!(f, ","),
            Token::Semicolon => write!(f, ";"),
            Token::Dot => write!(f, "."),
            Token::Star => write!(f, "*"),
            Token::Eof => write!(f, "EOF"),
        }
    }
}

/// Why a query does not parse. `at` is the position the message gives: the
/// 1-based character (not byte) where the problem starts.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ParseError {
    #[error("found {found}, expected {expected} at char {at}")]
    Unexpected {
        found: Token,
        expected: &'static str,
        at: usize,
    },
    #[error("unterminated string at char {at}")]
    UnterminatedString { at: usize },
    #[error("unterminated regex at char {at}")]
    UnterminatedRegex { at: usize },
    /// A `!` not followed by `=` or `~`.
    #[error("unexpected '!' at char {at}")]
    LoneBang { at: usize },
    #[error("unexpected character {found:?} at char {at}")]
    UnexpectedChar { found: char, at: usize },
    #[error("bad number {0}")]
    BadNumber(String),
    #[error("invalid duration {text} at char {at}")]
    InvalidDuration { text: String, at: usize },
    #[error("duration out of range")]
    DurationOutOfRange,
    /// A statement other than SELECT and SHOW, named in upper case.
    #[error("{0} statements are not supported: perch answers SELECT and SHOW MEASUREMENTS / TAG KEYS / TAG VALUES / FIELD KEYS (it is read-only; write with line protocol)")]
    UnsupportedStatement(String),
    #[error("SELECT … INTO is not supported: perch's InfluxQL is read-only")]
    SelectInto,
    #[error("empty query")]
    Empty,
    /// Too long, too deeply nested or too many operators
    /// (`base::limits`), found before parsing.
    #[error(transparent)]
    Limit(#[from] base::limits::LimitError),
}

impl base::HasKind for ParseError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

fn duration_unit(u: &str) -> Option<i64> {
    Some(match u {
        "ns" => 1,
        "u" | "µ" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 604_800_000_000_000,
        _ => return None,
    })
}

/// Splits a query into tokens with their character offsets.
pub fn lex(q: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Whether a `/` may start a regex: after an operator or `(`/`,`.
    let regex_ok = |out: &Vec<(Token, usize)>| {
        matches!(
            out.last(),
            Some((Token::Op(_), _)) | Some((Token::LParen, _)) | Some((Token::Comma, _))
        ) || matches!(out.last(), Some((Token::Ident(k), _)) if k.eq_ignore_ascii_case("from"))
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Token::LParen
            }
            ')' => {
                i += 1;
                Token::RParen
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            ';' => {
                i += 1;
                Token::Semicolon
            }
            '.' if !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                i += 1;
                Token::Dot
            }
            '*' => {
                i += 1;
                Token::Star
            }
            '\'' | '"' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(ParseError::UnterminatedString { at: start + 1 }),
                        Some('\\') => {
                            if let Some(&n) = chars.get(i + 1) {
                                s.push(n);
                            }
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                if quote == '"' {
                    Token::Quoted(s)
                } else {
                    Token::Str(s)
                }
            }
            '/' if regex_ok(&out) => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(ParseError::UnterminatedRegex { at: start + 1 }),
                        Some('\\') if chars.get(i + 1) == Some(&'/') => {
                            s.push('/');
                            i += 2;
                        }
                        Some('/') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                Token::Regex(s)
            }
            '=' | '!' | '<' | '>' | '+' | '-' | '/' | '%' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    "=~" => Some("=~"),
                    "!~" => Some("!~"),
                    "!=" => Some("!="),
                    "<>" => Some("!="),
                    "<=" => Some("<="),
                    ">=" => Some(">="),
                    _ => None,
                };
                if let Some(op) = op {
                    i += 2;
                    Token::Op(op)
                } else {
                    i += 1;
                    Token::Op(match c {
                        '=' => "=",
                        '<' => "<",
                        '>' => ">",
                        '+' => "+",
                        '-' => "-",
                        '/' => "/",
                        '%' => "%",
                        _ => return Err(ParseError::LoneBang { at: start + 1 }),
                    })
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let num: String = chars[start..i].iter().collect();
                // A unit right after the digits makes a duration.
                let us = i;
                while i < chars.len() && (chars[i].is_ascii_alphabetic() || chars[i] == 'µ') {
                    i += 1;
                }
                let unit: String = chars[us..i].iter().collect();
                let float =
                    |num: String| num.parse::<f64>().map_err(|_| ParseError::BadNumber(num));
                if unit.is_empty() {
                    if num.contains('.') {
                        Token::Number(float(num)?)
                    } else {
                        match num.parse::<i64>() {
                            Ok(n) => Token::Integer(n),
                            Err(_) => Token::Number(float(num)?),
                        }
                    }
                } else {
                    let invalid = || ParseError::InvalidDuration {
                        text: format!("{num}{unit}"),
                        at: start + 1,
                    };
                    let mul = duration_unit(&unit).ok_or_else(invalid)?;
                    let n: i64 = num.parse().map_err(|_| invalid())?;
                    Token::Duration(n.checked_mul(mul).ok_or(ParseError::DurationOutOfRange)?)
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Token::Ident(chars[start..i].iter().collect())
            }
            other => {
                return Err(ParseError::UnexpectedChar {
                    found: other,
                    at: start + 1,
                })
            }
        };
        // `field::float`, `host::tag`: type hints, accepted and ignored.
        if matches!(tok, Token::Ident(_) | Token::Quoted(_))
            && chars.get(i) == Some(&':')
            && chars.get(i + 1) == Some(&':')
        {
            i += 2;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
        }
        out.push((tok, start));
    }
    out.push((Token::Eof, chars.len()));
    Ok(out)
}

/// A value expression in `SELECT` or `WHERE`.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Ident(String),
    Str(String),
    Number(f64),
    /// Nanoseconds.
    Duration(i64),
    Regex(String),
    Now,
    Call(String, Vec<Expr>),
    Wildcard,
    Binary(Box<Expr>, &'static str, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Fill {
    Null,
    None,
    Value(f64),
    Previous,
    Linear,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub fields: Vec<Field>,
    pub measurement: String,
    pub condition: Option<Expr>,
    /// `GROUP BY time(interval, offset)` in nanoseconds.
    pub group_time: Option<(i64, i64)>,
    /// `GROUP BY` tags; `["*"]` for all.
    pub group_tags: Vec<String>,
    pub fill: Fill,
    pub descending: bool,
    pub limit: Option<usize>,
    pub offset: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    Select(Select),
    ShowMeasurements {
        condition: Option<Expr>,
        limit: Option<usize>,
    },
    ShowTagKeys {
        from: Option<String>,
    },
    ShowFieldKeys {
        from: Option<String>,
    },
    ShowTagValues {
        from: Option<String>,
        key: KeySelector,
        condition: Option<Expr>,
    },
    ShowDatabases,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeySelector {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    Regex(String),
    NotRegex(String),
}

struct Parser {
    toks: Vec<(Token, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, expected: &'static str) -> Result<T, ParseError> {
        let (t, at) = &self.toks[self.pos.min(self.toks.len() - 1)];
        Err(ParseError::Unexpected {
            found: t.clone(),
            expected,
            at: at + 1,
        })
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Token::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &'static str) -> Result<(), ParseError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(kw)
        }
    }

    fn expect(&mut self, t: Token, what: &'static str) -> Result<(), ParseError> {
        if *self.peek() == t {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Token::Ident(s) | Token::Quoted(s) => Ok(s),
            _ => {
                self.pos -= 1;
                self.err("identifier")
            }
        }
    }

    /// `[db.[rp.]]measurement`; the last part names the measurement.
    fn measurement(&mut self) -> Result<String, ParseError> {
        if let Token::Regex(_) = self.peek() {
            return self.err("a measurement name (regular expressions in FROM are not supported)");
        }
        let mut name = self.ident()?;
        while *self.peek() == Token::Dot {
            self.pos += 1;
            // `db..m` leaves the retention policy empty.
            if *self.peek() == Token::Dot {
                continue;
            }
            name = self.ident()?;
        }
        Ok(name)
    }

    fn statement(&mut self) -> Result<Statement, ParseError> {
        if self.eat_kw("select") {
            return self.select().map(Statement::Select);
        }
        if self.eat_kw("show") {
            if self.eat_kw("measurements") {
                let mut condition = None;
                if self.eat_kw("with") {
                    return self.err("SHOW MEASUREMENTS without WITH (not supported)");
                }
                if self.eat_kw("where") {
                    condition = Some(self.expr()?);
                }
                let limit = if self.eat_kw("limit") {
                    Some(self.usize()?)
                } else {
                    None
                };
                return Ok(Statement::ShowMeasurements { condition, limit });
            }
            if self.eat_kw("databases") {
                return Ok(Statement::ShowDatabases);
            }
            if self.eat_kw("field") {
                self.expect_kw("keys")?;
                let from = if self.eat_kw("from") {
                    Some(self.measurement()?)
                } else {
                    None
                };
                return Ok(Statement::ShowFieldKeys { from });
            }
            if self.eat_kw("tag") {
                if self.eat_kw("keys") {
                    let from = if self.eat_kw("from") {
                        Some(self.measurement()?)
                    } else {
                        None
                    };
                    return Ok(Statement::ShowTagKeys { from });
                }
                self.expect_kw("values")?;
                let from = if self.eat_kw("from") {
                    Some(self.measurement()?)
                } else {
                    None
                };
                self.expect_kw("with")?;
                self.expect_kw("key")?;
                let key = match self.next() {
                    Token::Op("=") => KeySelector::Eq(self.ident()?),
                    Token::Op("!=") => KeySelector::Neq(self.ident()?),
                    Token::Op("=~") => match self.next() {
                        Token::Regex(r) => KeySelector::Regex(r),
                        _ => return self.err("regular expression"),
                    },
                    Token::Op("!~") => match self.next() {
                        Token::Regex(r) => KeySelector::NotRegex(r),
                        _ => return self.err("regular expression"),
                    },
                    Token::Ident(s) if s.eq_ignore_ascii_case("in") => {
                        self.expect(Token::LParen, "(")?;
                        let mut keys = vec![self.ident()?];
                        while *self.peek() == Token::Comma {
                            self.pos += 1;
                            keys.push(self.ident()?);
                        }
                        self.expect(Token::RParen, ")")?;
                        KeySelector::In(keys)
                    }
                    _ => {
                        self.pos -= 1;
                        return self.err("=, !=, =~, !~ or IN");
                    }
                };
                let condition = if self.eat_kw("where") {
                    Some(self.expr()?)
                } else {
                    None
                };
                return Ok(Statement::ShowTagValues {
                    from,
                    key,
                    condition,
                });
            }
            return self.err("MEASUREMENTS, TAG KEYS, TAG VALUES, FIELD KEYS or DATABASES (other SHOW statements are not supported)");
        }
        match self.peek() {
            Token::Ident(s) => Err(ParseError::UnsupportedStatement(s.to_uppercase())),
            _ => self.err("SELECT or SHOW"),
        }
    }

    fn usize(&mut self) -> Result<usize, ParseError> {
        match self.next() {
            Token::Integer(n) if n >= 0 => Ok(n as usize),
            _ => {
                self.pos -= 1;
                self.err("a non-negative integer")
            }
        }
    }

    fn select(&mut self) -> Result<Select, ParseError> {
        let mut fields = Vec::new();
        loop {
            let expr = self.expr()?;
            let alias = if self.eat_kw("as") {
                Some(self.ident()?)
            } else {
                None
            };
            fields.push(Field { expr, alias });
            if *self.peek() == Token::Comma {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.is_kw("into") {
            return Err(ParseError::SelectInto);
        }
        self.expect_kw("from")?;
        let measurement = self.measurement()?;
        if *self.peek() == Token::Comma {
            return self.err("one measurement (several in FROM are not supported)");
        }
        let condition = if self.eat_kw("where") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_time = None;
        let mut group_tags = Vec::new();
        if self.eat_kw("group") {
            self.expect_kw("by")?;
            loop {
                if self.is_kw("time")
                    && self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Token::LParen)
                {
                    self.pos += 2;
                    let every = match self.next() {
                        Token::Duration(d) if d > 0 => d,
                        _ => {
                            self.pos -= 1;
                            return self.err("a positive duration such as 1m");
                        }
                    };
                    let mut offset = 0;
                    if *self.peek() == Token::Comma {
                        self.pos += 1;
                        let neg = if *self.peek() == Token::Op("-") {
                            self.pos += 1;
                            true
                        } else {
                            false
                        };
                        offset = match self.next() {
                            Token::Duration(d) => {
                                if neg {
                                    -d
                                } else {
                                    d
                                }
                            }
                            _ => {
                                self.pos -= 1;
                                return self.err("an offset duration");
                            }
                        };
                    }
                    self.expect(Token::RParen, ")")?;
                    group_time = Some((every, offset));
                } else if *self.peek() == Token::Star {
                    self.pos += 1;
                    group_tags.push("*".to_string());
                } else if let Token::Regex(_) = self.peek() {
                    return self
                        .err("tag names (regular expressions in GROUP BY are not supported)");
                } else {
                    group_tags.push(self.ident()?);
                }
                if *self.peek() == Token::Comma {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        let mut fill = Fill::Null;
        if self.eat_kw("fill") {
            self.expect(Token::LParen, "(")?;
            fill = match self.next() {
                Token::Ident(s) if s.eq_ignore_ascii_case("null") => Fill::Null,
                Token::Ident(s) if s.eq_ignore_ascii_case("none") => Fill::None,
                Token::Ident(s) if s.eq_ignore_ascii_case("previous") => Fill::Previous,
                Token::Ident(s) if s.eq_ignore_ascii_case("linear") => Fill::Linear,
                Token::Integer(n) => Fill::Value(n as f64),
                Token::Number(n) => Fill::Value(n),
                Token::Op("-") => match self.next() {
                    Token::Integer(n) => Fill::Value(-(n as f64)),
                    Token::Number(n) => Fill::Value(-n),
                    _ => return self.err("a number"),
                },
                _ => {
                    self.pos -= 1;
                    return self.err("null, none, previous, linear or a number");
                }
            };
            self.expect(Token::RParen, ")")?;
        }
        let mut descending = false;
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            self.expect_kw("time")?;
            if self.eat_kw("desc") {
                descending = true;
            } else {
                self.eat_kw("asc");
            }
        }
        let mut limit = None;
        let mut offset = 0;
        loop {
            if self.eat_kw("limit") {
                limit = Some(self.usize()?);
            } else if self.eat_kw("offset") {
                offset = self.usize()?;
            } else if self.is_kw("slimit") || self.is_kw("soffset") {
                return self.err("LIMIT or OFFSET (SLIMIT and SOFFSET are not supported)");
            } else if self.is_kw("tz") {
                return self.err("the end of the statement (tz() is not supported; times are UTC)");
            } else {
                break;
            }
        }
        Ok(Select {
            fields,
            measurement,
            condition,
            group_time,
            group_tags,
            fill,
            descending,
            limit,
            offset,
        })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.and_expr()?;
        while self.eat_kw("or") {
            let rhs = self.and_expr()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.cmp_expr()?;
        while self.eat_kw("and") {
            let rhs = self.cmp_expr()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn cmp_expr(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.add_expr()?;
        if let Token::Op(op @ ("=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~")) = *self.peek() {
            self.pos += 1;
            let rhs = self.add_expr()?;
            return Ok(Expr::Binary(Box::new(lhs), op, Box::new(rhs)));
        }
        Ok(lhs)
    }

    fn add_expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.primary()?;
        while let Token::Op(op @ ("+" | "-")) = *self.peek() {
            self.pos += 1;
            let rhs = self.primary()?;
            lhs = Expr::Binary(Box::new(lhs), op, Box::new(rhs));
        }
        Ok(lhs)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.next() {
            Token::LParen => {
                let e = self.expr()?;
                self.expect(Token::RParen, ")")?;
                Ok(e)
            }
            Token::Star => Ok(Expr::Wildcard),
            Token::Str(s) => Ok(Expr::Str(s)),
            Token::Number(n) => Ok(Expr::Number(n)),
            Token::Integer(n) => Ok(Expr::Number(n as f64)),
            Token::Duration(d) => Ok(Expr::Duration(d)),
            Token::Regex(r) => Ok(Expr::Regex(r)),
            Token::Op("-") => match self.next() {
                Token::Number(n) => Ok(Expr::Number(-n)),
                Token::Integer(n) => Ok(Expr::Number(-(n as f64))),
                Token::Duration(d) => Ok(Expr::Duration(-d)),
                _ => {
                    self.pos -= 1;
                    self.err("a number")
                }
            },
            Token::Quoted(s) => Ok(Expr::Ident(s)),
            Token::Ident(s) => {
                if *self.peek() == Token::LParen {
                    self.pos += 1;
                    let name = s.to_lowercase();
                    if name == "now" {
                        self.expect(Token::RParen, ")")?;
                        return Ok(Expr::Now);
                    }
                    let mut args = Vec::new();
                    if *self.peek() != Token::RParen {
                        loop {
                            args.push(self.expr()?);
                            if *self.peek() == Token::Comma {
                                self.pos += 1;
                            } else {
                                break;
                            }
                        }
                    }
                    self.expect(Token::RParen, ")")?;
                    return Ok(Expr::Call(name, args));
                }
                Ok(Expr::Ident(s))
            }
            _ => {
                self.pos -= 1;
                self.err("an identifier, a string, a number or (")
            }
        }
    }
}

/// Holds the tokens to the limits every query language shares
/// (`base::limits`): nesting of parentheses (the parser recurses once per
/// level), operators (each a level of the condition tree) and list items
/// (each field a column of every row). Positions in the message are byte
/// offsets, as for the other languages.
fn check_limits(q: &str, toks: &[(Token, usize)]) -> Result<(), ParseError> {
    let mut scan = base::limits::Scan::new("InfluxQL query", "operators and list items");
    for (t, at) in toks {
        let r = match t {
            Token::LParen => scan.open(*at),
            Token::RParen => {
                scan.close();
                Ok(())
            }
            Token::Op(_) | Token::Comma => scan.item(*at),
            Token::Ident(k) if k.eq_ignore_ascii_case("and") || k.eq_ignore_ascii_case("or") => {
                scan.item(*at)
            }
            _ => Ok(()),
        };
        // Tokens know their character; the message gives the byte.
        r.map_err(|e| e.map_at(|c| q.char_indices().nth(c).map_or(q.len(), |(b, _)| b)))?;
    }
    Ok(())
}

/// Parses one or more statements separated by `;`, after checking the
/// limits every query language shares (`base::limits`): the length before
/// lexing, nesting and operators before parsing.
pub fn parse(q: &str) -> Result<Vec<Statement>, ParseError> {
    base::limits::check_length("InfluxQL query", q)?;
    let toks = lex(q)?;
    check_limits(q, &toks)?;
    let mut p = Parser { toks, pos: 0 };
    let mut out = Vec::new();
    loop {
        while *p.peek() == Token::Semicolon {
            p.pos += 1;
        }
        if *p.peek() == Token::Eof {
            break;
        }
        out.push(p.statement()?);
        match p.peek() {
            Token::Semicolon | Token::Eof => {}
            _ => return p.err(";"),
        }
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(q: &str) -> Select {
        match parse(q) {
            Ok(mut v) if v.len() == 1 => match v.remove(0) {
                Statement::Select(s) => s,
                other => panic!("{q}: not a SELECT: {other:?}"),
            },
            other => panic!("{q}: {other:?}"),
        }
    }

    fn statement(q: &str) -> Statement {
        match parse(q) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("{q}: {other:?}"),
        }
    }

    fn error(q: &str) -> ParseError {
        match parse(q) {
            Err(e) => e,
            Ok(v) => panic!("{q} parsed: {v:?}"),
        }
    }

    fn ident(s: &str) -> Expr {
        Expr::Ident(s.into())
    }

    fn str_(s: &str) -> Expr {
        Expr::Str(s.into())
    }

    fn bin(a: Expr, op: &'static str, b: Expr) -> Expr {
        Expr::Binary(Box::new(a), op, Box::new(b))
    }

    fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }

    fn or(a: Expr, b: Expr) -> Expr {
        Expr::Or(Box::new(a), Box::new(b))
    }

    fn field(expr: Expr) -> Field {
        Field { expr, alias: None }
    }

    /// A SELECT with nothing but its fields and measurement.
    fn plain(fields: Vec<Field>, measurement: &str) -> Select {
        Select {
            fields,
            measurement: measurement.into(),
            condition: None,
            group_time: None,
            group_tags: Vec::new(),
            fill: Fill::Null,
            descending: false,
            limit: None,
            offset: 0,
        }
    }

    const NS_PER_MIN: i64 = 60_000_000_000;

    #[test]
    fn the_station_check_from_the_seed_payloads() {
        // `curl -G …/query --data-urlencode "db=station" --data-urlencode
        // "q=SELECT * FROM JNU_rasp"` (seed-payloads.md §3).
        assert_eq!(
            select("SELECT * FROM JNU_rasp"),
            plain(vec![field(Expr::Wildcard)], "JNU_rasp")
        );
    }

    #[test]
    fn a_select_with_every_clause() {
        let s = select(
            "select mean(temp) AS t, max(\"hum\") from station.autogen.env \
             where time > now() - 1h and site = 's0' \
             group by time(1m), device fill(previous) order by time desc limit 10 offset 5",
        );
        assert_eq!(
            s,
            Select {
                fields: vec![
                    Field {
                        expr: Expr::Call("mean".into(), vec![ident("temp")]),
                        alias: Some("t".into()),
                    },
                    field(Expr::Call("max".into(), vec![ident("hum")])),
                ],
                measurement: "env".into(),
                condition: Some(and(
                    bin(
                        ident("time"),
                        ">",
                        bin(Expr::Now, "-", Expr::Duration(60 * NS_PER_MIN))
                    ),
                    bin(ident("site"), "=", str_("s0")),
                )),
                group_time: Some((NS_PER_MIN, 0)),
                group_tags: vec!["device".into()],
                fill: Fill::Previous,
                descending: true,
                limit: Some(10),
                offset: 5,
            }
        );
    }

    #[test]
    fn keywords_and_function_names_are_case_insensitive() {
        let s = select("SeLeCt MEAN(v) FrOm m WhErE a = 1 GROUP by TIME(1m) FILL(NONE) LIMIT 1");
        assert_eq!(
            s.fields,
            vec![field(Expr::Call("mean".into(), vec![ident("v")]))]
        );
        assert_eq!(s.group_time, Some((NS_PER_MIN, 0)));
        assert_eq!(s.fill, Fill::None);
        assert_eq!(s.limit, Some(1));
        // Identifiers keep their case.
        assert_eq!(select("SELECT Temp FROM Env").measurement, "Env");
    }

    #[test]
    fn double_quotes_make_identifiers_and_single_quotes_strings() {
        let s = select(
            r#"SELECT "my field", "from" FROM "my.measurement" WHERE "host" = 'a' AND x = "y""#,
        );
        assert_eq!(
            s.fields,
            vec![field(ident("my field")), field(ident("from"))]
        );
        // The dot inside quotes is part of the name, not db.rp.
        assert_eq!(s.measurement, "my.measurement");
        assert_eq!(
            s.condition,
            Some(and(
                bin(ident("host"), "=", str_("a")),
                bin(ident("x"), "=", ident("y"))
            ))
        );
        // A backslash escapes the next character, quotes included.
        let s = select(r#"SELECT * FROM m WHERE a = 'it\'s' AND "b\"c" = 'x\\y'"#);
        assert_eq!(
            s.condition,
            Some(and(
                bin(ident("a"), "=", str_("it's")),
                bin(ident("b\"c"), "=", str_("x\\y"))
            ))
        );
    }

    #[test]
    fn the_last_part_of_a_qualified_name_is_the_measurement() {
        assert_eq!(select("SELECT * FROM db.rp.m").measurement, "m");
        assert_eq!(select("SELECT * FROM db..m").measurement, "m");
        assert_eq!(
            select("SELECT * FROM \"db\".\"rp\".\"m x\"").measurement,
            "m x"
        );
    }

    #[test]
    fn regexes_follow_operators_parentheses_commas_and_from() {
        let s = select(r"SELECT v FROM m WHERE host =~ /^a.*/ AND dc !~ /x\/y\.z/");
        assert_eq!(
            s.condition,
            Some(and(
                bin(ident("host"), "=~", Expr::Regex("^a.*".into())),
                // `\/` is a slash; other escapes reach the regex engine.
                bin(ident("dc"), "!~", Expr::Regex(r"x/y\.z".into())),
            ))
        );
        let toks = |q: &str| -> Vec<Token> { lex(q).unwrap().into_iter().map(|t| t.0).collect() };
        assert_eq!(toks("f(/a/")[2], Token::Regex("a".into()));
        assert_eq!(toks("f(x, /a/")[4], Token::Regex("a".into()));
        assert_eq!(toks("FROM /a/")[1], Token::Regex("a".into()));
        // After a value, `/` divides (and is then refused by the parser).
        assert_eq!(toks("4 / 2 /"), {
            vec![
                Token::Integer(4),
                Token::Op("/"),
                Token::Integer(2),
                Token::Op("/"),
                Token::Eof,
            ]
        });
        assert_eq!(
            error("SELECT v FROM m WHERE v = 4 / 2").to_string(),
            "found /, expected ; at char 29"
        );
    }

    #[test]
    fn time_literals_reach_the_condition_as_written() {
        let cond = |q: &str| select(q).condition.unwrap();
        assert_eq!(
            cond("SELECT v FROM m WHERE time >= '2026-01-01T00:00:00Z'"),
            bin(ident("time"), ">=", str_("2026-01-01T00:00:00Z"))
        );
        // Nanosecond integers become numbers; the executor reads them as times.
        assert_eq!(
            cond("SELECT v FROM m WHERE time < 1767225600000000000"),
            bin(
                ident("time"),
                "<",
                Expr::Number(1_767_225_600_000_000_000.0)
            )
        );
        assert_eq!(
            cond("SELECT v FROM m WHERE '2026-01-01' + 2m <= time"),
            bin(
                bin(str_("2026-01-01"), "+", Expr::Duration(2 * NS_PER_MIN)),
                "<=",
                ident("time")
            )
        );
        assert_eq!(
            cond("SELECT v FROM m WHERE time > now() - -30s"),
            bin(
                ident("time"),
                ">",
                bin(Expr::Now, "-", Expr::Duration(-30_000_000_000))
            )
        );
    }

    #[test]
    fn durations_in_every_unit() {
        for (text, ns) in [
            ("7ns", 7),
            ("7u", 7_000),
            ("7µ", 7_000),
            ("7ms", 7_000_000),
            ("7s", 7_000_000_000),
            ("7m", 7 * NS_PER_MIN),
            ("7h", 7 * 60 * NS_PER_MIN),
            ("7d", 7 * 24 * 60 * NS_PER_MIN),
            ("7w", 7 * 7 * 24 * 60 * NS_PER_MIN),
        ] {
            assert_eq!(
                lex(text).unwrap(),
                vec![(Token::Duration(ns), 0), (Token::Eof, text.chars().count())],
                "{text}"
            );
        }
        assert_eq!(
            error("SELECT v FROM m WHERE time > now() - 1.5h"),
            ParseError::InvalidDuration {
                text: "1.5h".into(),
                at: 38
            }
        );
        assert_eq!(
            error("SELECT v FROM m WHERE time > now() - 5y").to_string(),
            "invalid duration 5y at char 38"
        );
        assert_eq!(
            error("SELECT v FROM m WHERE time > now() - 99999999999w"),
            ParseError::DurationOutOfRange
        );
    }

    #[test]
    fn numbers() {
        let tok = |q: &str| lex(q).unwrap().remove(0).0;
        assert_eq!(tok("42"), Token::Integer(42));
        assert_eq!(tok("1.5"), Token::Number(1.5));
        assert_eq!(tok(".5"), Token::Number(0.5));
        // Past i64, an integer is a float.
        assert_eq!(tok("99999999999999999999"), Token::Number(1e20));
        assert_eq!(
            error("SELECT v FROM m WHERE v > 1.2.3"),
            ParseError::BadNumber("1.2.3".into())
        );
        assert_eq!(
            select("SELECT v FROM m WHERE v > -2.5 AND w < -3").condition,
            Some(and(
                bin(ident("v"), ">", Expr::Number(-2.5)),
                bin(ident("w"), "<", Expr::Number(-3.0))
            ))
        );
    }

    #[test]
    fn group_by_time_with_offsets_and_tags() {
        let g = |q: &str| {
            let s = select(q);
            (s.group_time, s.group_tags)
        };
        assert_eq!(
            g("SELECT mean(v) FROM m GROUP BY time(1h, 15m)"),
            (Some((60 * NS_PER_MIN, 15 * NS_PER_MIN)), vec![])
        );
        assert_eq!(
            g("SELECT mean(v) FROM m GROUP BY time(1h, -15m)"),
            (Some((60 * NS_PER_MIN, -15 * NS_PER_MIN)), vec![])
        );
        assert_eq!(
            g("SELECT mean(v) FROM m GROUP BY host, time(5m), \"dc\""),
            (
                Some((5 * NS_PER_MIN, 0)),
                vec!["host".to_string(), "dc".to_string()]
            )
        );
        assert_eq!(
            g("SELECT v FROM m GROUP BY *"),
            (None, vec!["*".to_string()])
        );
        // `time` not followed by `(` is a tag like any other.
        assert_eq!(
            g("SELECT v FROM m GROUP BY time"),
            (None, vec!["time".to_string()])
        );
        for (q, message) in [
            (
                "SELECT mean(v) FROM m GROUP BY time(0s)",
                "found 0ns, expected a positive duration such as 1m at char 37",
            ),
            (
                "SELECT mean(v) FROM m GROUP BY time(5)",
                "found 5, expected a positive duration such as 1m at char 37",
            ),
            (
                "SELECT mean(v) FROM m GROUP BY time(5m, 2)",
                "found 2, expected an offset duration at char 41",
            ),
            (
                "SELECT mean(v) FROM m GROUP BY time(5m",
                "found EOF, expected ) at char 39",
            ),
            (
                "SELECT v FROM m GROUP BY host, /h.*/",
                "found /h.*/, expected tag names (regular expressions in GROUP BY are not supported) at char 32",
            ),
            ("SELECT v FROM m GROUP host", "found host, expected by at char 23"),
        ] {
            assert_eq!(error(q).to_string(), message, "{q}");
        }
    }

    #[test]
    fn fill_takes_a_keyword_or_a_number() {
        let fill = |arg: &str| {
            select(&format!(
                "SELECT mean(v) FROM m GROUP BY time(1m) fill({arg})"
            ))
            .fill
        };
        assert_eq!(fill("null"), Fill::Null);
        assert_eq!(fill("none"), Fill::None);
        assert_eq!(fill("previous"), Fill::Previous);
        assert_eq!(fill("LINEAR"), Fill::Linear);
        assert_eq!(fill("0"), Fill::Value(0.0));
        assert_eq!(fill("-1"), Fill::Value(-1.0));
        assert_eq!(fill("2.5"), Fill::Value(2.5));
        assert_eq!(fill("-2.5"), Fill::Value(-2.5));
        assert_eq!(
            error("SELECT mean(v) FROM m GROUP BY time(1m) fill(zero)").to_string(),
            "found zero, expected null, none, previous, linear or a number at char 46"
        );
        assert!(matches!(
            error("SELECT mean(v) FROM m fill(-x)"),
            ParseError::Unexpected {
                expected: "a number",
                ..
            }
        ));
        // Without GROUP BY time, fill is accepted; the executor ignores it.
        assert_eq!(select("SELECT v FROM m fill(none)").fill, Fill::None);
    }

    #[test]
    fn order_limit_and_offset() {
        let s = select("SELECT v FROM m ORDER BY time ASC OFFSET 3 LIMIT 2");
        assert_eq!((s.descending, s.limit, s.offset), (false, Some(2), 3));
        let s = select("SELECT v FROM m LIMIT 0");
        assert_eq!(s.limit, Some(0));
        for (q, message) in [
            (
                "SELECT v FROM m LIMIT -1",
                "found -, expected a non-negative integer at char 23",
            ),
            (
                "SELECT v FROM m LIMIT 1.5",
                "found 1.5, expected a non-negative integer at char 23",
            ),
            (
                "SELECT v FROM m ORDER BY host",
                "found host, expected time at char 26",
            ),
            (
                "SELECT * FROM env SLIMIT 1",
                "found SLIMIT, expected LIMIT or OFFSET (SLIMIT and SOFFSET are not supported) at char 19",
            ),
            (
                "SELECT * FROM env tz('UTC')",
                "found tz, expected the end of the statement (tz() is not supported; times are UTC) at char 19",
            ),
        ] {
            assert_eq!(error(q).to_string(), message, "{q}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            select("SELECT v FROM m WHERE a = 1 OR b = 2 AND c = 3").condition,
            Some(or(
                bin(ident("a"), "=", Expr::Number(1.0)),
                and(
                    bin(ident("b"), "=", Expr::Number(2.0)),
                    bin(ident("c"), "=", Expr::Number(3.0))
                )
            ))
        );
        assert_eq!(
            select("SELECT v FROM m WHERE (a = 1 OR b = 2) AND c <> 3").condition,
            Some(and(
                or(
                    bin(ident("a"), "=", Expr::Number(1.0)),
                    bin(ident("b"), "=", Expr::Number(2.0))
                ),
                bin(ident("c"), "!=", Expr::Number(3.0))
            ))
        );
    }

    #[test]
    fn type_hints_and_comments_are_ignored() {
        let s = select("SELECT temp::float FROM m -- a comment\nWHERE host::tag = 'a'");
        assert_eq!(s.fields, vec![field(ident("temp"))]);
        assert_eq!(s.condition, Some(bin(ident("host"), "=", str_("a"))));
    }

    #[test]
    fn show_statements() {
        assert_eq!(statement("SHOW DATABASES"), Statement::ShowDatabases);
        assert_eq!(
            statement("SHOW MEASUREMENTS WHERE site = 's0' LIMIT 5"),
            Statement::ShowMeasurements {
                condition: Some(bin(ident("site"), "=", str_("s0"))),
                limit: Some(5),
            }
        );
        assert_eq!(
            statement("show tag keys from db.rp.env"),
            Statement::ShowTagKeys {
                from: Some("env".into())
            }
        );
        assert_eq!(
            statement("SHOW FIELD KEYS"),
            Statement::ShowFieldKeys { from: None }
        );
        let key = |q: &str| match statement(q) {
            Statement::ShowTagValues { key, .. } => key,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(
            key("SHOW TAG VALUES WITH KEY = site"),
            KeySelector::Eq("site".into())
        );
        assert_eq!(
            key("SHOW TAG VALUES WITH KEY != \"site\""),
            KeySelector::Neq("site".into())
        );
        assert_eq!(
            key("SHOW TAG VALUES WITH KEY =~ /s.*/"),
            KeySelector::Regex("s.*".into())
        );
        assert_eq!(
            key("SHOW TAG VALUES WITH KEY !~ /s.*/"),
            KeySelector::NotRegex("s.*".into())
        );
        assert_eq!(
            statement("SHOW TAG VALUES FROM env WITH KEY IN (site, device) WHERE device = 'd3'"),
            Statement::ShowTagValues {
                from: Some("env".into()),
                key: KeySelector::In(vec!["site".into(), "device".into()]),
                condition: Some(bin(ident("device"), "=", str_("d3"))),
            }
        );
    }

    #[test]
    fn statements_split_on_semicolons() {
        let v = parse(";SHOW MEASUREMENTS;; SHOW FIELD KEYS FROM env;").unwrap();
        assert_eq!(
            v,
            vec![
                Statement::ShowMeasurements {
                    condition: None,
                    limit: None
                },
                Statement::ShowFieldKeys {
                    from: Some("env".into())
                },
            ]
        );
        for q in ["", "  ", ";;", "-- only a comment"] {
            assert_eq!(error(q), ParseError::Empty, "{q:?}");
        }
        assert_eq!(
            error("SELECT * FROM m extra").to_string(),
            "found extra, expected ; at char 17"
        );
    }

    #[test]
    fn lexer_errors_name_the_character() {
        assert_eq!(
            error("SELECT 'abc"),
            ParseError::UnterminatedString { at: 8 }
        );
        assert_eq!(
            error("SELECT \"abc FROM m"),
            ParseError::UnterminatedString { at: 8 }
        );
        assert_eq!(
            error("SELECT * FROM m WHERE a =~ /x"),
            ParseError::UnterminatedRegex { at: 28 }
        );
        assert_eq!(
            error("SELECT ! FROM env").to_string(),
            "unexpected '!' at char 8"
        );
        assert_eq!(
            error("SELECT # FROM env").to_string(),
            "unexpected character '#' at char 8"
        );
        // Positions count characters, not bytes.
        assert_eq!(
            error("SELECT 'é' FROM m WHERE #"),
            ParseError::UnexpectedChar { found: '#', at: 25 }
        );
    }

    #[test]
    fn parser_errors_name_the_token_and_where_it_is() {
        assert_eq!(
            error("SELECT * FROM"),
            ParseError::Unexpected {
                found: Token::Eof,
                expected: "identifier",
                at: 14
            }
        );
        assert_eq!(
            error("SELECT * FROM env WHERE").to_string(),
            "found EOF, expected an identifier, a string, a number or ( at char 24"
        );
        assert_eq!(
            error("SELECT * FROM /env.*/").to_string(),
            "found /env.*/, expected a measurement name (regular expressions in FROM are not supported) at char 15"
        );
        assert_eq!(
            error("SELECT * FROM a, b").to_string(),
            "found ,, expected one measurement (several in FROM are not supported) at char 16"
        );
        assert_eq!(
            error("SHOW RETENTION POLICIES").to_string(),
            "found RETENTION, expected MEASUREMENTS, TAG KEYS, TAG VALUES, FIELD KEYS or DATABASES (other SHOW statements are not supported) at char 6"
        );
        assert_eq!(
            error("SHOW MEASUREMENTS WITH MEASUREMENT = x").to_string(),
            "found MEASUREMENT, expected SHOW MEASUREMENTS without WITH (not supported) at char 24"
        );
        assert_eq!(
            error("SHOW TAG VALUES WITH KEY device").to_string(),
            "found device, expected =, !=, =~, !~ or IN at char 26"
        );
        assert!(matches!(
            error("SHOW TAG VALUES WITH KEY =~ 'x'"),
            ParseError::Unexpected {
                expected: "regular expression",
                ..
            }
        ));
        assert_eq!(
            error("SHOW TAG VALUES WITH KEY IN (a, b"),
            ParseError::Unexpected {
                found: Token::Eof,
                expected: ")",
                at: 34
            }
        );
        assert_eq!(
            error("SELECT mean(v FROM m").to_string(),
            "found FROM, expected ) at char 15"
        );
    }

    #[test]
    fn deep_long_and_operator_heavy_queries_are_refused_before_parsing() {
        let deep = format!(
            "SELECT * FROM m WHERE {}a = 1{}",
            "(".repeat(50_000),
            ")".repeat(50_000)
        );
        assert_eq!(
            error(&deep).to_string(),
            "InfluxQL query nests deeper than 250 levels (at byte 272)"
        );
        // Positions are bytes, also after multi-byte characters.
        let deep = format!("SELECT * FROM \"é\" WHERE {}a = 1", "(".repeat(300));
        assert_eq!(
            error(&deep).to_string(),
            "InfluxQL query nests deeper than 250 levels (at byte 275)"
        );
        let calls = format!("SELECT {}a{} FROM m", "mean(".repeat(300), ")".repeat(300));
        assert!(matches!(error(&calls), ParseError::Limit(_)));
        let chain = format!("SELECT * FROM m WHERE {}", vec!["a = 1"; 600].join(" AND "));
        assert_eq!(
            error(&chain).to_string(),
            "InfluxQL query has more than 1000 operators and list items (at byte 5024); split it up"
        );
        let fields = format!("SELECT {} FROM m", vec!["a"; 1002].join(","));
        assert_eq!(
            error(&fields).to_string(),
            "InfluxQL query has more than 1000 operators and list items (at byte 2008); split it up"
        );
        let long = format!("SELECT * FROM {}", "m".repeat(300_000));
        assert_eq!(
            error(&long).to_string(),
            "InfluxQL query is 300014 bytes long, more than the limit of 262144 bytes"
        );
        // Within the limits, deep is fine.
        let ok = format!(
            "SELECT * FROM m WHERE {}a = 1{}",
            "(".repeat(250),
            ")".repeat(250)
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert_eq!(
            error("DROP MEASUREMENT env").to_string(),
            "DROP statements are not supported: perch answers SELECT and SHOW MEASUREMENTS / TAG KEYS / TAG VALUES / FIELD KEYS (it is read-only; write with line protocol)"
        );
        assert_eq!(
            error("create database x"),
            ParseError::UnsupportedStatement("CREATE".into())
        );
        assert_eq!(
            error("DELETE FROM env"),
            ParseError::UnsupportedStatement("DELETE".into())
        );
        assert_eq!(
            error("SELEC * FROM env"),
            ParseError::UnsupportedStatement("SELEC".into())
        );
        assert_eq!(
            error("SELECT * INTO x FROM env").to_string(),
            "SELECT … INTO is not supported: perch's InfluxQL is read-only"
        );
        assert_eq!(
            error("42").to_string(),
            "found 42, expected SELECT or SHOW at char 1"
        );
    }
}
