//! The OData `$filter` subset Batch supports, per list operation (docs/batch-facts.md).
//!
//! Grammar: comparisons `prop op literal` (`eq ne gt ge lt le`), `startswith(prop,'text')`,
//! `and`, `or`, `not` and parentheses. Literals: `'text'` (with `''` for a quote),
//! `datetime'…'`, integers, `true`/`false`. Only the properties Batch documents for the
//! operation are accepted; anything else is an error the caller turns into 400
//! `InvalidQueryParameterValue`, as the service does.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock;

/// Longest filter accepted, so hostile input stays cheap.
const MAX_FILTER_LEN: usize = 4096;

/// Deepest nesting of parentheses and `not`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;

/// Which list operation a filter is for; each allows different properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `GET /jobs`.
    Jobs,
    /// `GET /jobs/{job}/tasks`.
    Tasks,
    /// `GET /jobs/{job}/jobpreparationandreleasetaskstatus`.
    PrepRelease,
    /// Task and node file lists.
    Files,
    /// `GET /pools`.
    Pools,
    /// `GET /pools/{pool}/nodes`.
    Nodes,
    /// `GET /nodecounts`.
    NodeCounts,
}

/// The kind of a filterable property, which decides the operators and literals it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Free text (ids): comparisons and `startswith`, case-insensitive.
    Text,
    /// Enumerations (`state`, `result`): `eq`/`ne`, case-insensitive.
    Enum,
    /// Timestamps: all comparisons against `datetime'…'` or a quoted timestamp.
    Time,
    /// Integers (`exitCode`).
    Int,
    /// File names: `startswith` only.
    Name,
}

/// The properties each operation accepts, with the JSON path they read.
fn property(target: Target, name: &str) -> Option<(Kind, &'static [&'static str])> {
    let lower = name.to_ascii_lowercase();
    let found: (Kind, &'static [&'static str]) = match (target, lower.as_str()) {
        (Target::Jobs | Target::Tasks, "id") => (Kind::Text, &["id"]),
        (Target::Jobs | Target::Tasks, "state") => (Kind::Enum, &["state"]),
        (Target::Jobs | Target::Tasks, "statetransitiontime") => {
            (Kind::Time, &["stateTransitionTime"])
        }
        (Target::Jobs | Target::Tasks, "creationtime") => (Kind::Time, &["creationTime"]),
        (Target::Jobs | Target::Tasks, "lastmodified" | "lastmodifiedtime") => {
            (Kind::Time, &["lastModified"])
        }
        (Target::Jobs | Target::Tasks, "executioninfo/starttime") => {
            (Kind::Time, &["executionInfo", "startTime"])
        }
        (Target::Jobs | Target::Tasks, "executioninfo/endtime") => {
            (Kind::Time, &["executionInfo", "endTime"])
        }
        (Target::Jobs, "executioninfo/poolid") => (Kind::Text, &["executionInfo", "poolId"]),
        (Target::Tasks, "executioninfo/exitcode") => (Kind::Int, &["executionInfo", "exitCode"]),
        (Target::Tasks, "executioninfo/result") => (Kind::Enum, &["executionInfo", "result"]),
        (Target::PrepRelease, "poolid") => (Kind::Enum, &["poolId"]),
        (Target::PrepRelease, "nodeid") => (Kind::Enum, &["nodeId"]),
        (Target::PrepRelease, other) => return prep_release_property(other),
        (Target::Files, "name") => (Kind::Name, &["name"]),
        (Target::Pools | Target::Nodes | Target::NodeCounts, other) => {
            return pool_and_node_property(target, other);
        }
        _ => return None,
    };
    Some(found)
}

fn prep_release_property(name: &str) -> Option<(Kind, &'static [&'static str])> {
    const PREP: &str = "jobPreparationTaskExecutionInfo";
    const RELEASE: &str = "jobReleaseTaskExecutionInfo";
    let (section, field) = name.split_once('/')?;
    let section = match section {
        "jobpreparationtaskexecutioninfo" => PREP,
        "jobreleasetaskexecutioninfo" => RELEASE,
        _ => return None,
    };
    let (kind, field) = match field {
        "state" => (Kind::Enum, "state"),
        "starttime" => (Kind::Time, "startTime"),
        "endtime" => (Kind::Time, "endTime"),
        "exitcode" => (Kind::Int, "exitCode"),
        "result" => (Kind::Enum, "result"),
        _ => return None,
    };
    let path: &'static [&'static str] = match (section, field) {
        (PREP, "state") => &[PREP, "state"],
        (PREP, "startTime") => &[PREP, "startTime"],
        (PREP, "endTime") => &[PREP, "endTime"],
        (PREP, "exitCode") => &[PREP, "exitCode"],
        (PREP, _) => &[PREP, "result"],
        (_, "state") => &[RELEASE, "state"],
        (_, "startTime") => &[RELEASE, "startTime"],
        (_, "endTime") => &[RELEASE, "endTime"],
        (_, "exitCode") => &[RELEASE, "exitCode"],
        _ => &[RELEASE, "result"],
    };
    Some((kind, path))
}

/// The properties of List Pools, List Nodes and List Pool Node Counts (docs/batch-facts.md):
/// node errors and `isDedicated` cannot be filtered on; node counts take only `poolId`.
fn pool_and_node_property(target: Target, name: &str) -> Option<(Kind, &'static [&'static str])> {
    let found: (Kind, &'static [&'static str]) = match (target, name) {
        (Target::NodeCounts, "poolid") => (Kind::Enum, &["poolId"]),
        (Target::Pools, "id") => (Kind::Text, &["id"]),
        (Target::Pools, "state") => (Kind::Enum, &["state"]),
        (Target::Pools, "allocationstate") => (Kind::Enum, &["allocationState"]),
        (Target::Pools, "vmsize") => (Kind::Enum, &["vmSize"]),
        (Target::Pools, "statetransitiontime") => (Kind::Time, &["stateTransitionTime"]),
        (Target::Pools, "allocationstatetransitiontime") => {
            (Kind::Time, &["allocationStateTransitionTime"])
        }
        (Target::Pools, "creationtime") => (Kind::Time, &["creationTime"]),
        (Target::Pools, "lastmodified") => (Kind::Time, &["lastModified"]),
        (Target::Nodes, "state") => (Kind::Enum, &["state"]),
        (Target::Nodes, "statetransitiontime") => (Kind::Time, &["stateTransitionTime"]),
        (Target::Nodes, "lastboottime") => (Kind::Time, &["lastBootTime"]),
        (Target::Nodes, "allocationtime") => (Kind::Time, &["allocationTime"]),
        (Target::Nodes, "starttaskinfo/state") => (Kind::Enum, &["startTaskInfo", "state"]),
        (Target::Nodes, "starttaskinfo/result") => (Kind::Enum, &["startTaskInfo", "result"]),
        (Target::Nodes, "starttaskinfo/exitcode") => (Kind::Int, &["startTaskInfo", "exitCode"]),
        (Target::Nodes, "starttaskinfo/starttime") => (Kind::Time, &["startTaskInfo", "startTime"]),
        (Target::Nodes, "starttaskinfo/endtime") => (Kind::Time, &["startTaskInfo", "endTime"]),
        _ => return None,
    };
    Some(found)
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A literal after checking it against the property kind.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Time(OffsetDateTime),
    Int(i64),
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        path: &'static [&'static str],
        kind: Kind,
        op: Op,
        literal: Literal,
    },
    StartsWith {
        path: &'static [&'static str],
        prefix: String,
    },
}

/// A filter ready to test rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    expr: Expr,
}

/// Why a filter was refused; the text goes into the `Reason` of the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FilterError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

impl Filter {
    /// Parses `text` for `target`.
    pub(crate) fn parse(text: &str, target: Target) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return fail("The filter is too long.");
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            target,
            depth: 0,
        };
        let expr = parser.or_expr()?;
        if parser.pos != parser.tokens.len() {
            return fail("Unexpected text after the end of the filter expression.");
        }
        Ok(Self { expr })
    }

    /// Whether a row (job, task, status row or file) passes.
    pub(crate) fn matches(&self, row: &Map<String, Value>) -> bool {
        eval(&self.expr, row)
    }
}

fn eval(expr: &Expr, row: &Map<String, Value>) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, row) && eval(b, row),
        Expr::Or(a, b) => eval(a, row) || eval(b, row),
        Expr::Not(a) => !eval(a, row),
        Expr::StartsWith { path, prefix } => {
            lookup(row, path)
                .and_then(Value::as_str)
                .is_some_and(|value| {
                    let value = value.replace('\\', "/").to_lowercase();
                    value.starts_with(&prefix.replace('\\', "/").to_lowercase())
                })
        }
        Expr::Compare {
            path,
            kind,
            op,
            literal,
        } => {
            let ordering = lookup(row, path).and_then(|value| compare(value, *kind, literal));
            match (ordering, op) {
                (None, Op::Ne) => true,
                (None, _) => false,
                (Some(ord), Op::Eq) => ord.is_eq(),
                (Some(ord), Op::Ne) => !ord.is_eq(),
                (Some(ord), Op::Gt) => ord.is_gt(),
                (Some(ord), Op::Ge) => ord.is_ge(),
                (Some(ord), Op::Lt) => ord.is_lt(),
                (Some(ord), Op::Le) => ord.is_le(),
            }
        }
    }
}

fn lookup<'a>(row: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = row.get(*first)?;
    for segment in rest {
        value = value.get(*segment)?;
    }
    Some(value).filter(|v| !v.is_null())
}

fn compare(value: &Value, kind: Kind, literal: &Literal) -> Option<std::cmp::Ordering> {
    match (kind, literal) {
        (Kind::Int, Literal::Int(expected)) => value.as_i64().map(|v| v.cmp(expected)),
        (Kind::Time, Literal::Time(expected)) => value
            .as_str()
            .and_then(clock::parse_time)
            .map(|v| v.cmp(expected)),
        (_, Literal::Text(expected)) => value
            .as_str()
            .map(|v| v.to_lowercase().cmp(&expected.to_lowercase())),
        _ => None,
    }
}

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    DateTime(String),
    Int(i64),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let (literal, next) = quoted(&chars, i)?;
                tokens.push(Token::Text(literal));
                i = next;
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                let Ok(number) = digits.parse::<i64>() else {
                    return fail(format!("'{digits}' is not a valid integer."));
                };
                tokens.push(Token::Int(number));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '/')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word.eq_ignore_ascii_case("datetime") && chars.get(i) == Some(&'\'') {
                    let (literal, next) = quoted(&chars, i)?;
                    tokens.push(Token::DateTime(literal));
                    i = next;
                } else {
                    tokens.push(Token::Word(word));
                }
            }
            other => return fail(format!("Unexpected character '{other}' in the filter.")),
        }
    }
    Ok(tokens)
}

/// Reads a `'…'` literal starting at `start` (the opening quote); `''` is an escaped quote.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            return Ok((out, i + 1));
        }
        out.push(chars[i]);
        i += 1;
    }
    fail("A string literal in the filter is not terminated.")
}

/// Recursive-descent parser over the tokens.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    target: Target,
    depth: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn expect(&mut self, expected: &Token, what: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(ref token) if token == expected => Ok(()),
            _ => fail(format!("Expected {what} in the filter.")),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and_expr()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail("The filter is nested too deeply.");
        }
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.pos) == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.or_expr()?;
            self.expect(&Token::Close, "')'")?;
            return Ok(inner);
        }
        if self.peek_word("startswith") {
            self.pos += 1;
            self.expect(&Token::Open, "'(' after startswith")?;
            let Some(Token::Word(name)) = self.next() else {
                return fail("startswith needs a property name.");
            };
            let (kind, path) = self.property(&name)?;
            if !matches!(kind, Kind::Text | Kind::Name) {
                return fail(format!("startswith is not supported on '{name}'."));
            }
            self.expect(&Token::Comma, "',' in startswith")?;
            let Some(Token::Text(prefix)) = self.next() else {
                return fail("startswith needs a quoted string.");
            };
            self.expect(&Token::Close, "')' after startswith")?;
            return Ok(Expr::StartsWith { path, prefix });
        }
        let Some(Token::Word(name)) = self.next() else {
            return fail("Expected a property name in the filter.");
        };
        let (kind, path) = self.property(&name)?;
        let op = match self.next() {
            Some(Token::Word(op)) => match op.to_ascii_lowercase().as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                other => return fail(format!("'{other}' is not a supported operator.")),
            },
            _ => return fail(format!("Expected an operator after '{name}'.")),
        };
        let allowed = match kind {
            Kind::Enum => matches!(op, Op::Eq | Op::Ne),
            Kind::Name => false,
            Kind::Text | Kind::Time | Kind::Int => true,
        };
        if !allowed {
            return fail(format!("The operator is not supported on '{name}'."));
        }
        let literal = match (kind, self.next()) {
            (Kind::Int, Some(Token::Int(n))) => Literal::Int(n),
            (Kind::Time, Some(Token::DateTime(text) | Token::Text(text))) => {
                match clock::parse_time(&text) {
                    Some(t) => Literal::Time(t),
                    None => return fail(format!("'{text}' is not a valid datetime.")),
                }
            }
            (Kind::Text | Kind::Enum, Some(Token::Text(text))) => Literal::Text(text),
            _ => {
                return fail(format!(
                    "The value compared with '{name}' has the wrong type."
                ));
            }
        };
        Ok(Expr::Compare {
            path,
            kind,
            op,
            literal,
        })
    }

    fn property(&self, name: &str) -> Result<(Kind, &'static [&'static str]), FilterError> {
        property(self.target, name).map_or_else(
            || {
                fail(format!(
                    "The property '{name}' is not supported in this filter."
                ))
            },
            Ok,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn check(filter: &str, target: Target, value: Value) -> bool {
        Filter::parse(filter, target).unwrap().matches(&row(value))
    }

    #[test]
    fn sweep_filters() {
        let task = json!({"id": "t1", "state": "completed", "stateTransitionTime": "2025-01-01T10:00:00.0000000Z",
            "executionInfo": {"result": "failure", "exitCode": 137, "endTime": "2025-01-01T10:00:00.1234567Z"}});
        assert!(check(
            "state eq 'completed' and executionInfo/result eq 'failure'",
            Target::Tasks,
            task.clone()
        ));
        assert!(check(
            "executionInfo/exitCode eq 137",
            Target::Tasks,
            task.clone()
        ));
        assert!(!check(
            "executionInfo/exitCode eq -9",
            Target::Tasks,
            task.clone()
        ));
        assert!(check(
            "executionInfo/endTime ge datetime'2025-01-01T09:00:00Z'",
            Target::Tasks,
            task.clone()
        ));
        assert!(check(
            "executionInfo/endTime ge '2025-01-01T10:00:00.1234567Z'",
            Target::Tasks,
            task.clone()
        ));
        assert!(!check(
            "stateTransitionTime gt '2025-01-01T10:00:00Z'",
            Target::Tasks,
            task.clone()
        ));
        assert!(check("State eq 'Completed'", Target::Tasks, task.clone()));
        assert!(check(
            "(state eq 'active' or state eq 'completed') and not (id eq 't2')",
            Target::Tasks,
            task.clone()
        ));
        assert!(check("startswith(id,'t')", Target::Tasks, task));
    }

    #[test]
    fn missing_values_only_pass_ne() {
        let task = json!({"id": "t1", "state": "active", "executionInfo": {}});
        assert!(!check(
            "executionInfo/exitCode eq 1",
            Target::Tasks,
            task.clone()
        ));
        assert!(check(
            "executionInfo/result ne 'failure'",
            Target::Tasks,
            task
        ));
    }

    #[test]
    fn files_and_prep() {
        assert!(check(
            "startswith(name,'wd')",
            Target::Files,
            json!({"name": "wd/out.txt"})
        ));
        assert!(check(
            "startswith(name,'wd\\')",
            Target::Files,
            json!({"name": "wd/out.txt"})
        ));
        assert!(!check(
            "startswith(name,'std')",
            Target::Files,
            json!({"name": "wd/out.txt"})
        ));
        let row = json!({"poolId": "p", "nodeId": "n", "jobPreparationTaskExecutionInfo": {"result": "failure"}});
        assert!(check(
            "jobPreparationTaskExecutionInfo/result eq 'failure'",
            Target::PrepRelease,
            row
        ));
    }

    #[test]
    fn refuses_what_batch_refuses() {
        for (filter, target) in [
            ("name eq 'x'", Target::Files),
            ("executionInfo/exitCode eq 137", Target::Jobs),
            (
                "executionInfo/terminateReason eq 'TaskFailed'",
                Target::Jobs,
            ),
            ("state gt 'active'", Target::Tasks),
            ("state eq", Target::Tasks),
            ("state eq 'a' and", Target::Tasks),
            ("executionInfo/endTime ge 'yesterday'", Target::Tasks),
            ("executionInfo/exitCode eq '1'", Target::Tasks),
            ("state eq 'a' extra", Target::Tasks),
            ("state eq 'unterminated", Target::Tasks),
            ("id eq 99999999999999999999999", Target::Tasks),
            ("state ~ 'a'", Target::Tasks),
            ("", Target::Tasks),
        ] {
            assert!(Filter::parse(filter, target).is_err(), "{filter}");
        }
        let deep = format!("{}state eq 'a'{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Filter::parse(&deep, Target::Tasks).is_err());
        let nots = format!("{}state eq 'a'", "not ".repeat(1000));
        assert!(Filter::parse(&nots, Target::Tasks).is_err());
    }
}
