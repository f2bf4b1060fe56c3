//! Statements sent together: on PostgreSQL a pipeline is one round trip however many
//! statements it holds (they still run one after another, in order, in the transaction), so
//! the steps of storing a group that do not need each other's answers cost one wait on the
//! network instead of one each. SQLite runs them in turn, as it would anyway.
//!
//! Set-wise statements are built here too: keys in `IN (…)` lists, rows as a `VALUES` table,
//! multi-row inserts, each in chunks padded to a power of two so a statement comes in a
//! handful of shapes (the engines cache prepared statements).

use std::ops::Range;

use super::{DbError, Row, Tx, Value};

/// Keys per set-wise read.
const IN_CHUNK: usize = 1024;

/// Parameters per multi-row insert, whatever the width of a row.
const INSERT_PARAMS: usize = 960;

/// Statements to send together, grouped in parts (a part is one logical read or write, which
/// may take several statements when its keys or rows come in chunks).
#[derive(Default)]
pub struct Pipeline {
    statements: Vec<(String, Vec<Value>)>,
    parts: Vec<Range<usize>>,
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

/// `sql` for `rows` a chunk at a time: `{values}` in `sql` stands for the chunk as a table,
/// `(VALUES …)`, whose columns `column1`, `column2`, … have the SQL types `types` and come in
/// the order given. A row may be read more than once (chunks are padded).
pub fn values_statements<const N: usize>(
    sql: &str,
    types: [&str; N],
    rows: &[[Value; N]],
) -> Vec<(String, Vec<Value>)> {
    padded_chunks(rows, (IN_CHUNK / N).max(1))
        .map(|chunk| {
            let values = (0..chunk.len())
                .map(|r| {
                    let row = (0..N)
                        .map(|c| format!("CAST(${} AS {})", r * N + c + 1, types[c]))
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

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    fn part(&mut self, statements: impl IntoIterator<Item = (String, Vec<Value>)>) -> Part {
        let start = self.statements.len();
        self.statements.extend(statements);
        self.parts.push(start..self.statements.len());
        Part(self.parts.len() - 1)
    }

    /// One statement.
    pub fn add(&mut self, sql: &str, params: &[Value]) -> Part {
        self.part([(sql.to_string(), params.to_vec())])
    }

    /// Statements built elsewhere (a transaction's locks).
    pub fn add_statements(&mut self, statements: Vec<(String, Vec<Value>)>) -> Part {
        self.part(statements)
    }

    /// `sql_prefix … IN (keys)`, `fixed` parameters first (a key may come back more than once
    /// when `keys` repeats it).
    pub fn add_in<K: Clone + Into<Value>>(
        &mut self,
        sql_prefix: &str,
        fixed: &[Value],
        keys: &[K],
    ) -> Part {
        let statements: Vec<_> = padded_chunks(keys, IN_CHUNK)
            .map(|chunk| {
                let sql = format!(
                    "{sql_prefix} IN ({})",
                    placeholders(fixed.len() + 1, chunk.len())
                );
                let mut params = fixed.to_vec();
                params.extend(chunk.into_iter().map(Into::into));
                (sql, params)
            })
            .collect();
        self.part(statements)
    }

    /// `sql` for `rows` a chunk at a time (see [`values_statements`]).
    pub fn add_values<const N: usize>(
        &mut self,
        sql: &str,
        types: [&str; N],
        rows: &[[Value; N]],
    ) -> Part {
        self.part(values_statements(sql, types, rows))
    }

    /// Inserts `rows` with `insert` (`INSERT INTO t(columns…)`, and anything after `{values}`
    /// such as an ON CONFLICT clause), many rows per statement.
    pub fn add_insert<const N: usize>(&mut self, insert: &str, rows: &[[Value; N]]) -> Part {
        let statements: Vec<_> = rows
            .chunks((INSERT_PARAMS / N).max(1))
            .map(|chunk| {
                let values = (0..chunk.len())
                    .map(|r| format!("({})", placeholders(r * N + 1, N)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = if insert.contains("{values}") {
                    insert.replace("{values}", &format!("VALUES {values}"))
                } else {
                    format!("{insert} VALUES {values}")
                };
                (sql, chunk.iter().flatten().cloned().collect())
            })
            .collect();
        self.part(statements)
    }

    /// Sends every statement; the answers by part.
    pub async fn run(self, tx: &mut impl Tx) -> Result<Answers, DbError> {
        let rows = if self.statements.is_empty() {
            Vec::new()
        } else {
            tx.pipeline(&self.statements).await?
        };
        Ok(Answers {
            rows,
            parts: self.parts,
        })
    }
}
