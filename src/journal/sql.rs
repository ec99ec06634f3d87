//! The two SQL backends behind one small interface: statements written once (with
//! `?N` placeholders), parameters and result rows as [`Val`]s.
//!
//! SQLite runs the statements as written; PostgreSQL gets `?N` rewritten to `$N`. The
//! few spots where the dialects differ (case-insensitive comparison, the clock) ask
//! [`Conn::nocase`] and [`Conn::now_ms`] for their fragment.

use std::cell::RefCell;
use std::collections::HashMap;

use super::pg::Pg;

/// One SQL value: a parameter, or a column of a result row. Parameters are typed even
/// when NULL (PostgreSQL checks a parameter's type against the statement's).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// A NULL of unknown type (only in result rows).
    Null,
    /// Text, or a NULL text.
    Text(Option<String>),
    /// An integer, or a NULL integer.
    Int(Option<i64>),
    /// A floating-point number, or a NULL one.
    Real(Option<f64>),
    /// Bytes, or NULL bytes.
    Blob(Option<Vec<u8>>),
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(Some(v.clone()))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(Some(v))
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Val {
        Val::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Val {
        Val::Text(v)
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Val {
        Val::Text(v.clone())
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(Some(v))
    }
}
impl From<Option<f64>> for Val {
    fn from(v: Option<f64>) -> Val {
        Val::Real(v)
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Val {
        Val::Blob(Some(v))
    }
}

impl Val {
    /// True for SQL NULL of any type.
    pub(super) fn is_null(&self) -> bool {
        matches!(
            self,
            Val::Null | Val::Text(None) | Val::Int(None) | Val::Real(None) | Val::Blob(None)
        )
    }
}

/// A result row.
pub(super) struct Row(pub(super) Vec<Val>);

/// A column that does not hold what the statement promised (a schema changed by hand).
#[derive(Debug)]
pub(super) struct WrongType {
    /// The column's position.
    pub(super) index: usize,
    /// What was expected.
    pub(super) expected: &'static str,
}

impl Row {
    fn at(&self, i: usize) -> &Val {
        self.0.get(i).unwrap_or(&Val::Null)
    }

    /// Optional text at `i`.
    pub(super) fn opt_text(&self, i: usize) -> Result<Option<String>, WrongType> {
        match self.at(i) {
            v if v.is_null() => Ok(None),
            Val::Text(Some(s)) => Ok(Some(s.clone())),
            _ => Err(WrongType {
                index: i,
                expected: "text",
            }),
        }
    }

    /// Text at `i`, which must not be NULL.
    pub(super) fn text(&self, i: usize) -> Result<String, WrongType> {
        self.opt_text(i)?.ok_or(WrongType {
            index: i,
            expected: "text",
        })
    }

    /// Optional integer at `i`.
    pub(super) fn opt_int(&self, i: usize) -> Result<Option<i64>, WrongType> {
        match self.at(i) {
            v if v.is_null() => Ok(None),
            Val::Int(Some(n)) => Ok(Some(*n)),
            _ => Err(WrongType {
                index: i,
                expected: "integer",
            }),
        }
    }

    /// Integer at `i`, which must not be NULL.
    pub(super) fn int(&self, i: usize) -> Result<i64, WrongType> {
        self.opt_int(i)?.ok_or(WrongType {
            index: i,
            expected: "integer",
        })
    }

    /// Optional number at `i` (an integer is read as one).
    pub(super) fn opt_real(&self, i: usize) -> Result<Option<f64>, WrongType> {
        match self.at(i) {
            v if v.is_null() => Ok(None),
            Val::Real(Some(n)) => Ok(Some(*n)),
            #[allow(clippy::cast_precision_loss)]
            Val::Int(Some(n)) => Ok(Some(*n as f64)),
            _ => Err(WrongType {
                index: i,
                expected: "number",
            }),
        }
    }

    /// Bytes at `i`, which must not be NULL.
    pub(super) fn blob(&self, i: usize) -> Result<Vec<u8>, WrongType> {
        match self.at(i) {
            Val::Blob(Some(b)) => Ok(b.clone()),
            _ => Err(WrongType {
                index: i,
                expected: "bytes",
            }),
        }
    }
}

/// What a backend reported.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// SQLite refused.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused, or the connection to it broke.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
}

/// Which database the journal lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the state directory.
    Sqlite,
    /// A shared PostgreSQL database.
    Postgres,
}

/// A connection to either backend.
pub(super) enum Conn {
    /// SQLite.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL, with its prepared statements.
    Pg(Box<RefCell<Pg>>),
}

/// `?N` placeholders as PostgreSQL's `$N`.
pub(super) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl Conn {
    /// Which backend this is.
    pub(super) fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// `column = param` compared without regard to ASCII case.
    pub(super) fn nocase(&self, column: &str, param: &str) -> String {
        match self {
            Conn::Sqlite(_) => format!("{column} = {param} COLLATE NOCASE"),
            Conn::Pg(_) => format!("lower({column}) = lower({param})"),
        }
    }

    /// The database's clock in milliseconds since the epoch (leases use the database's
    /// clock, so instances on machines with skewed clocks still agree).
    pub(super) fn now_ms(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Conn::Pg(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(super) fn exec(&self, sql: &str, params: &[Val]) -> Result<u64, SqlError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.execute(rusqlite::params_from_iter(params.iter().map(SqliteVal)))?;
                Ok(n as u64)
            }
            Conn::Pg(p) => Ok(p.borrow_mut().execute(sql, params)?),
        }
    }

    /// Runs a query and returns every row.
    pub(super) fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, SqlError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let rows = stmt
                    .query_map(
                        rusqlite::params_from_iter(params.iter().map(SqliteVal)),
                        |row| {
                            (0..n)
                                .map(|i| {
                                    Ok(match row.get_ref(i)? {
                                        rusqlite::types::ValueRef::Null => Val::Null,
                                        rusqlite::types::ValueRef::Integer(v) => Val::Int(Some(v)),
                                        rusqlite::types::ValueRef::Real(v) => Val::Real(Some(v)),
                                        rusqlite::types::ValueRef::Text(t) => {
                                            Val::Text(Some(String::from_utf8_lossy(t).into_owned()))
                                        }
                                        rusqlite::types::ValueRef::Blob(b) => {
                                            Val::Blob(Some(b.to_vec()))
                                        }
                                    })
                                })
                                .collect::<rusqlite::Result<Vec<Val>>>()
                                .map(Row)
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Conn::Pg(p) => Ok(p.borrow_mut().query(sql, params)?),
        }
    }

    /// The first row of a query, if any.
    pub(super) fn row(&self, sql: &str, params: &[Val]) -> Result<Option<Row>, SqlError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// Runs several statements without parameters (`BEGIN`, `COMMIT`, DDL).
    pub(super) fn batch(&self, sql: &str) -> Result<(), SqlError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(p) => Ok(p.borrow_mut().batch(sql)?),
        }
    }
}

/// A [`Val`] as rusqlite binds it.
struct SqliteVal<'a>(&'a Val);

impl rusqlite::ToSql for SqliteVal<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self.0 {
            Val::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Int(Some(n)) => ToSqlOutput::Owned(Value::Integer(*n)),
            Val::Real(Some(n)) => ToSqlOutput::Owned(Value::Real(*n)),
            Val::Blob(Some(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            _ => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// Prepared statements of one PostgreSQL connection, by their SQL.
pub(super) type StatementCache = HashMap<String, postgres::Statement>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("a = ?1 AND b = '?2' OR c IN (?10, ?)"),
            "a = $1 AND b = '?2' OR c IN ($10, ?)"
        );
    }
}
