//! Statements sent together: on PostgreSQL a pipeline is one round trip however many
//! statements it holds (they still run one after another, in order, in the transaction), so
//! the steps of storing a group that do not need each other's answers cost one wait on the
//! network instead of one each. SQLite runs them in turn, as it would anyway.
//!
//! Set-wise statements are built here too, for the engine the pipeline runs on: keys and rows
//! as array parameters on PostgreSQL (one short statement whatever their number: its text,
//! parsing and plan do not grow with the keys), as `IN (…)` lists and `VALUES` tables on
//! SQLite, in chunks padded to a power of two so a statement comes in a handful of shapes (the
//! engines cache prepared statements). Inserts likewise: one statement of array parameters on
//! PostgreSQL, multi-row `VALUES` lists on SQLite.

use std::ops::Range;

use super::{DbError, Dialect, Row, Tx, Value};

/// Keys per set-wise read.
const IN_CHUNK: usize = 1024;

/// Parameters per multi-row insert on SQLite, whatever the width of a row.
const INSERT_PARAMS: usize = 960;

/// Statements to send together, grouped in parts (a part is one logical read or write, which
/// may take several statements when its keys or rows come in chunks).
#[derive(Default)]
pub struct Pipeline {
    parts: Vec<Planned>,
}

/// A part of a pipeline, to take its rows from the answer.
#[derive(Debug, Clone, Copy)]
pub struct Part(usize);

/// The rows each part of a pipeline returned.
pub struct Answers {
    rows: Vec<Vec<Row>>,
    parts: Vec<Range<usize>>,
}

impl Answers {
    /// Every row of `part`'s statements, in order.
    pub fn take(&mut self, part: Part) -> Vec<Row> {
        let range = self.parts.get(part.0).cloned().unwrap_or(0..0);
        self.rows
            .get_mut(range)
            .map(|rows| rows.iter_mut().flat_map(std::mem::take).collect())
            .unwrap_or_default()
    }
}

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` in chunks of at most `per_chunk`, each padded to a power of two by repeating its
/// last row. Readers must not mind a repeated key.
fn padded_chunks<T: Clone>(rows: &[T], per_chunk: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    rows.chunks(per_chunk.max(1)).map(|chunk| {
        let mut padded = chunk.to_vec();
        if let Some(last) = chunk.last() {
            padded.resize(chunk.len().next_power_of_two(), last.clone());
        }
        padded
    })
}

/// `sql` for `rows`: `{values}` in `sql` stands for the rows as a table whose columns
/// `column1`, `column2`, … have the SQL types `types` and come in the order given. On
/// PostgreSQL one statement whatever the number of rows, each column one array parameter
/// (`{values} AS given` becomes `unnest(…) AS given(column1, …)`), so the statement's text
/// and plan do not grow with the rows; on SQLite a `(VALUES …)` list a chunk at a time, each
/// padded to a power of two (a row may be read more than once).
#[cfg_attr(not(any(test, feature = "postgres")), allow(dead_code))]
pub fn values_statements<const N: usize>(
    dialect: Dialect,
    sql: &str,
    types: [&str; N],
    rows: &[[Value; N]],
) -> Vec<(String, Vec<Value>)> {
    Planned::rows(sql, types, rows).statements(dialect)
}

/// [`values_statements`] for rows of `types.len()` values.
fn rows_statements(
    dialect: Dialect,
    sql: &str,
    types: &[String],
    rows: Vec<Vec<Value>>,
) -> Vec<(String, Vec<Value>)> {
    let n = types.len();
    if rows.is_empty() || n == 0 {
        return Vec::new();
    }
    if dialect == Dialect::Postgres && sql.contains(ROWS_AS_GIVEN) {
        let columns = (1..=n)
            .map(|c| format!("column{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = sql.replace(
            ROWS_AS_GIVEN,
            &format!("{} AS given({columns})", unnest(types)),
        );
        return vec![(sql, column_arrays(rows, n))];
    }
    padded_chunks(&rows, (IN_CHUNK / n).max(1))
        .map(|chunk| {
            let values = (0..chunk.len())
                .map(|r| {
                    let row = (0..n)
                        .map(|c| format!("CAST(${} AS {})", r * n + c + 1, types[c]))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({row})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = sql.replace("{values}", &format!("(VALUES {values})"));
            (sql, chunk.into_iter().flatten().collect())
        })
        .collect()
}

/// `insert` for `rows` (see [`Pipeline::add_insert`]). On PostgreSQL the rows are read from
/// one array per column: a multi-row `VALUES` list had a statement per row count, each
/// prepared on first use and kept by every connection, and planned on every run with a
/// parameter per value (over 600 for a group's events).
fn insert_statements(
    dialect: Dialect,
    insert: &str,
    types: &[String],
    rows: Vec<Vec<Value>>,
) -> Vec<(String, Vec<Value>)> {
    let n = types.len();
    if rows.is_empty() || n == 0 {
        return Vec::new();
    }
    let with_rows = |rows_sql: String| {
        if insert.contains("{values}") {
            insert.replace("{values}", &rows_sql)
        } else {
            format!("{insert} {rows_sql}")
        }
    };
    if dialect == Dialect::Postgres {
        let sql = with_rows(format!("SELECT * FROM {}", unnest(types)));
        return vec![(sql, column_arrays(rows, n))];
    }
    rows.chunks((INSERT_PARAMS / n).max(1))
        .map(|chunk| {
            let values = (0..chunk.len())
                .map(|r| format!("({})", placeholders(r * n + 1, n)))
                .collect::<Vec<_>>()
                .join(", ");
            (
                with_rows(format!("VALUES {values}")),
                chunk.iter().flatten().cloned().collect(),
            )
        })
        .collect()
}

/// `unnest(CAST($1 AS T1[]), …)`: rows of the SQL types `types` read from one array parameter
/// per column (PostgreSQL). Text comes as the key columns compare (`COLLATE "C"`), so rows
/// given to a recursive walk of keys match the keys it reads.
fn unnest(types: &[String]) -> String {
    let arrays = types
        .iter()
        .enumerate()
        .map(|(c, sql_type)| match sql_type.as_str() {
            "TEXT" => format!("CAST(${} AS TEXT[]) COLLATE \"C\"", c + 1),
            _ => format!("CAST(${} AS {sql_type}[])", c + 1),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("unnest({arrays})")
}

/// `rows` of `width` values as the parameters of [`unnest`]: one array per column, the values
/// moved, not copied.
fn column_arrays(rows: Vec<Vec<Value>>, width: usize) -> Vec<Value> {
    let mut columns: Vec<Vec<Value>> = (0..width).map(|_| Vec::with_capacity(rows.len())).collect();
    for row in rows {
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    columns.into_iter().map(Value::List).collect()
}

/// How set-wise statements name their rows: the table of rows, as `given`.
const ROWS_AS_GIVEN: &str = "{values} AS given";

/// `sql_prefix IN (keys)`, `fixed` parameters first: on PostgreSQL `= ANY` of one array
/// parameter, on SQLite in chunks padded to a power of two (a key may come back more than once
/// when `keys` repeats it).
fn in_statements(
    dialect: Dialect,
    sql_prefix: &str,
    fixed: &[Value],
    keys: Vec<Value>,
) -> Vec<(String, Vec<Value>)> {
    if keys.is_empty() {
        return Vec::new();
    }
    if dialect == Dialect::Postgres {
        let mut params = fixed.to_vec();
        params.push(Value::List(keys));
        return vec![(format!("{sql_prefix} = ANY(${})", fixed.len() + 1), params)];
    }
    padded_chunks(&keys, IN_CHUNK)
        .map(|chunk| {
            let sql = format!(
                "{sql_prefix} IN ({})",
                placeholders(fixed.len() + 1, chunk.len())
            );
            let mut params = fixed.to_vec();
            params.extend(chunk);
            (sql, params)
        })
        .collect()
}

/// A part as added, made into statements for the engine when the pipeline runs.
enum Planned {
    Statements(Vec<(String, Vec<Value>)>),
    In {
        sql_prefix: String,
        fixed: Vec<Value>,
        keys: Vec<Value>,
    },
    Rows {
        sql: String,
        types: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    Insert {
        insert: String,
        types: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
}

impl Planned {
    /// `sql` for `rows` of the SQL types `types` (see [`values_statements`]).
    fn rows<const N: usize>(sql: &str, types: [&str; N], rows: &[[Value; N]]) -> Planned {
        Planned::Rows {
            sql: sql.to_string(),
            types: types.iter().map(|t| t.to_string()).collect(),
            rows: rows.iter().map(|row| row.to_vec()).collect(),
        }
    }

    fn statements(self, dialect: Dialect) -> Vec<(String, Vec<Value>)> {
        match self {
            Planned::Statements(statements) => statements,
            Planned::In {
                sql_prefix,
                fixed,
                keys,
            } => in_statements(dialect, &sql_prefix, &fixed, keys),
            Planned::Rows { sql, types, rows } => rows_statements(dialect, &sql, &types, rows),
            Planned::Insert {
                insert,
                types,
                rows,
            } => insert_statements(dialect, &insert, &types, rows),
        }
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    fn part(&mut self, planned: Planned) -> Part {
        self.parts.push(planned);
        Part(self.parts.len() - 1)
    }

    /// One statement.
    pub fn add(&mut self, sql: &str, params: &[Value]) -> Part {
        self.part(Planned::Statements(vec![(
            sql.to_string(),
            params.to_vec(),
        )]))
    }

    /// Statements built elsewhere (a transaction's locks).
    pub fn add_statements(&mut self, statements: Vec<(String, Vec<Value>)>) -> Part {
        self.part(Planned::Statements(statements))
    }

    /// `sql_prefix … IN (keys)`, `fixed` parameters first (a key may come back more than once
    /// when `keys` repeats it).
    pub fn add_in<K: Clone + Into<Value>>(
        &mut self,
        sql_prefix: &str,
        fixed: &[Value],
        keys: &[K],
    ) -> Part {
        self.part(Planned::In {
            sql_prefix: sql_prefix.to_string(),
            fixed: fixed.to_vec(),
            keys: keys.iter().cloned().map(Into::into).collect(),
        })
    }

    /// `sql` for `rows` (see [`values_statements`]).
    pub fn add_values<const N: usize>(
        &mut self,
        sql: &str,
        types: [&str; N],
        rows: &[[Value; N]],
    ) -> Part {
        self.part(Planned::rows(sql, types, rows))
    }

    /// Inserts `rows`, whose columns have the SQL types `types`, with `insert` (`INSERT INTO
    /// t(columns…)`, and anything after `{values}` such as an ON CONFLICT clause): on
    /// PostgreSQL one statement of array parameters whatever the number of rows, on SQLite
    /// many rows per statement.
    pub fn add_insert<const N: usize>(
        &mut self,
        insert: &str,
        types: [&str; N],
        rows: &[[Value; N]],
    ) -> Part {
        self.part(Planned::Insert {
            insert: insert.to_string(),
            types: types.iter().map(|t| t.to_string()).collect(),
            rows: rows.iter().map(|row| row.to_vec()).collect(),
        })
    }

    /// Sends every statement, made for `tx`'s engine; the answers by part.
    pub async fn run(self, tx: &mut impl Tx) -> Result<Answers, DbError> {
        let dialect = tx.dialect();
        let mut statements = Vec::new();
        let mut parts = Vec::with_capacity(self.parts.len());
        for planned in self.parts {
            let start = statements.len();
            statements.extend(planned.statements(dialect));
            parts.push(start..statements.len());
        }
        let rows = if statements.is_empty() {
            Vec::new()
        } else {
            tx.pipeline(&statements).await?
        };
        Ok(Answers { rows, parts })
    }
}
