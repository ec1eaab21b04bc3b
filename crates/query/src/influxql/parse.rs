//! A parser for the read-only InfluxQL subset perch answers: `SELECT` with
//! fields, `*` and the functions `mean min max sum count first last`, `WHERE`
//! on time, tags and fields, `GROUP BY time(…)` and tags, `fill(…)`,
//! `ORDER BY time`, `LIMIT`/`OFFSET`; `SHOW MEASUREMENTS`, `SHOW TAG KEYS`,
//! `SHOW FIELD KEYS`, `SHOW TAG VALUES WITH KEY …`. Anything else is an
//! error naming what is not supported, never a guess.

use std::fmt;

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
pub fn lex(q: &str) -> Result<Vec<(Token, usize)>, String> {
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
                        None => return Err(format!("unterminated string at char {}", start + 1)),
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
                        None => return Err(format!("unterminated regex at char {}", start + 1)),
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
                        _ => return Err(format!("unexpected '!' at char {}", start + 1)),
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
                if unit.is_empty() {
                    if num.contains('.') {
                        Token::Number(num.parse().map_err(|_| format!("bad number {num}"))?)
                    } else {
                        match num.parse::<i64>() {
                            Ok(n) => Token::Integer(n),
                            Err(_) => {
                                Token::Number(num.parse().map_err(|_| format!("bad number {num}"))?)
                            }
                        }
                    }
                } else {
                    let mul = duration_unit(&unit).ok_or_else(|| {
                        format!("invalid duration {num}{unit} at char {}", start + 1)
                    })?;
                    let n: i64 = num.parse().map_err(|_| {
                        format!("invalid duration {num}{unit} at char {}", start + 1)
                    })?;
                    Token::Duration(n.checked_mul(mul).ok_or("duration out of range")?)
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Token::Ident(chars[start..i].iter().collect())
            }
            other => {
                return Err(format!(
                    "unexpected character {other:?} at char {}",
                    start + 1
                ))
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

type PResult<T> = Result<T, String>;

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

    fn err<T>(&self, expected: &str) -> PResult<T> {
        let (t, at) = &self.toks[self.pos.min(self.toks.len() - 1)];
        Err(format!("found {t}, expected {expected} at char {}", at + 1))
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

    fn expect_kw(&mut self, kw: &str) -> PResult<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(kw)
        }
    }

    fn expect(&mut self, t: Token, what: &str) -> PResult<()> {
        if *self.peek() == t {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    fn ident(&mut self) -> PResult<String> {
        match self.next() {
            Token::Ident(s) | Token::Quoted(s) => Ok(s),
            _ => {
                self.pos -= 1;
                self.err("identifier")
            }
        }
    }

    /// `[db.[rp.]]measurement`; the last part names the measurement.
    fn measurement(&mut self) -> PResult<String> {
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

    fn statement(&mut self) -> PResult<Statement> {
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
            Token::Ident(s) => {
                let kw = s.to_uppercase();
                Err(format!(
                    "{kw} statements are not supported: perch answers SELECT and SHOW MEASUREMENTS / TAG KEYS / TAG VALUES / FIELD KEYS (it is read-only; write with line protocol)"
                ))
            }
            _ => self.err("SELECT or SHOW"),
        }
    }

    fn usize(&mut self) -> PResult<usize> {
        match self.next() {
            Token::Integer(n) if n >= 0 => Ok(n as usize),
            _ => {
                self.pos -= 1;
                self.err("a non-negative integer")
            }
        }
    }

    fn select(&mut self) -> PResult<Select> {
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
            return Err("SELECT … INTO is not supported: perch's InfluxQL is read-only".into());
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

    fn expr(&mut self) -> PResult<Expr> {
        let mut lhs = self.and_expr()?;
        while self.eat_kw("or") {
            let rhs = self.and_expr()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and_expr(&mut self) -> PResult<Expr> {
        let mut lhs = self.cmp_expr()?;
        while self.eat_kw("and") {
            let rhs = self.cmp_expr()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn cmp_expr(&mut self) -> PResult<Expr> {
        let lhs = self.add_expr()?;
        if let Token::Op(op @ ("=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~")) = *self.peek() {
            self.pos += 1;
            let rhs = self.add_expr()?;
            return Ok(Expr::Binary(Box::new(lhs), op, Box::new(rhs)));
        }
        Ok(lhs)
    }

    fn add_expr(&mut self) -> PResult<Expr> {
        let mut lhs = self.primary()?;
        while let Token::Op(op @ ("+" | "-")) = *self.peek() {
            self.pos += 1;
            let rhs = self.primary()?;
            lhs = Expr::Binary(Box::new(lhs), op, Box::new(rhs));
        }
        Ok(lhs)
    }

    fn primary(&mut self) -> PResult<Expr> {
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

/// Parses one or more statements separated by `;`.
pub fn parse(q: &str) -> Result<Vec<Statement>, String> {
    let toks = lex(q)?;
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
        return Err("empty query".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_forms() {
        let s = parse("SELECT * FROM JNU_rasp").unwrap();
        assert!(
            matches!(&s[0], Statement::Select(x) if x.measurement == "JNU_rasp" && x.fields[0].expr == Expr::Wildcard)
        );
        let s = parse(
            "select mean(temp) AS t, max(\"hum\") from station.autogen.env where time > now() - 1h and site = 's0' group by time(1m), device fill(previous) limit 10",
        )
        .unwrap();
        let Statement::Select(x) = &s[0] else {
            panic!()
        };
        assert_eq!(x.measurement, "env");
        assert_eq!(x.group_time, Some((60_000_000_000, 0)));
        assert_eq!(x.group_tags, vec!["device".to_string()]);
        assert_eq!(x.fill, Fill::Previous);
        assert_eq!(x.limit, Some(10));
        assert_eq!(x.fields[0].alias.as_deref(), Some("t"));
        assert!(parse("SHOW TAG VALUES FROM env WITH KEY = site").is_ok());
        assert!(parse("SHOW TAG VALUES WITH KEY IN (site, device)").is_ok());
        assert!(
            parse("SHOW MEASUREMENTS; SHOW FIELD KEYS FROM env")
                .unwrap()
                .len()
                == 2
        );
        assert!(parse("SELECT v FROM m WHERE host =~ /^a.*/").is_ok());
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        for q in [
            "DROP MEASUREMENT env",
            "CREATE DATABASE x",
            "DELETE FROM env",
            "SELECT * INTO x FROM env",
            "SELECT * FROM /env.*/",
            "SHOW RETENTION POLICIES",
            "SELECT * FROM env SLIMIT 1",
            "SELECT * FROM",
            "SELECT * FROM env WHERE",
            "SELECT 'abc",
            "",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }
}
