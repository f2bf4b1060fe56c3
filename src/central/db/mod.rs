//! The seam between central's logic and its database engine: one transaction trait, two
//! engines. The logic (`store.rs`, `profiles.rs`) is written once against [`Tx`]; SQLite (the
//! embedded default, one writer) and PostgreSQL (several central instances on one database,
//! behind the `postgres` feature) each implement it. SQL is written once with `$1`-style
//! parameters in the subset both engines understand; where they differ (JSON fields, locks,
//! the application counter) the engine supplies its own fragment.

mod pipeline;
pub mod sqlite;

#[cfg(test)]
pub use pipeline::values_statements;
pub use pipeline::Pipeline;

#[cfg(feature = "postgres")]
pub mod postgres;

/// The migration, on both engines, to roots that hold what was merged into them: each root
/// profile's `points` becomes the sum of the running totals of every ref that resolves to it
/// (0 for a profile merged into another), and each identifier moves to the root its profile
/// resolves to. Merges form trees under root profiles; the depth bound only guards against a
/// damaged store.
macro_rules! membership {
    () => {
        "WITH RECURSIVE membership(ref, root, depth) AS (
            SELECT ref, ref, 0 FROM profiles
            WHERE NOT EXISTS (SELECT 1 FROM profile_aliases WHERE from_ref = profiles.ref)
            UNION ALL
            SELECT profile_aliases.from_ref, membership.root, membership.depth + 1
            FROM profile_aliases JOIN membership ON profile_aliases.to_ref = membership.ref
            WHERE membership.depth < 64)"
    };
}
pub const ROOTS_HOLD_THEIR_MEMBERS: &str = concat!(
    membership!(),
    " UPDATE profiles SET points = COALESCE((SELECT SUM(ref_points.points) FROM membership
        JOIN ref_points ON ref_points.ref = membership.ref WHERE membership.root = profiles.ref), 0);",
    membership!(),
    " UPDATE profile_identifiers SET profile = (SELECT membership.root FROM membership
        WHERE membership.ref = profile_identifiers.profile LIMIT 1)
    WHERE profile IN (SELECT ref FROM membership WHERE depth > 0);"
);

/// A parameter or a column value: central stores integers, text and NULL only (booleans as
/// 0/1), so both engines hold the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// An array of values, one parameter: PostgreSQL takes a set-wise statement's keys and rows
    /// this way (`= ANY($1)`, `unnest($1, $2)`). SQLite has no arrays; it never gets one.
    List(Vec<Value>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(value)
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Value {
        // Seqs, revs and counts stay below 2^53 (docs/protocol.md); anything larger is clamped.
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Int(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_string())
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(value.clone())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// Parameters, each converted with `Value::from`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::central::db::Value::from($value)),*][..]
    };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn column(&self, index: usize) -> Result<&Value, DbError> {
        self.0
            .get(index)
            .ok_or_else(|| DbError::Type(format!("no column {index}")))
    }

    /// An integer column.
    pub fn int(&self, index: usize) -> Result<i64, DbError> {
        self.opt_int(index)?
            .ok_or_else(|| DbError::Type(format!("column {index} is NULL")))
    }

    /// An integer column that may be NULL.
    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, DbError> {
        match self.column(index)? {
            Value::Null => Ok(None),
            Value::Int(value) => Ok(Some(*value)),
            Value::Text(text) => Err(DbError::Type(format!(
                "column {index} is text ({text:.20}), not an integer"
            ))),
            Value::List(_) => Err(DbError::Type(format!("column {index} is an array"))),
        }
    }

    /// A text column.
    pub fn text(&self, index: usize) -> Result<String, DbError> {
        self.opt_text(index)?
            .ok_or_else(|| DbError::Type(format!("column {index} is NULL")))
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, index: usize) -> Result<Option<String>, DbError> {
        match self.column(index)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            Value::Int(value) => Err(DbError::Type(format!(
                "column {index} is an integer ({value}), not text"
            ))),
            Value::List(_) => Err(DbError::Type(format!("column {index} is an array"))),
        }
    }
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL pool could not give a connection.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A column held another type than the query expects.
    #[error("unexpected column value: {0}")]
    Type(String),
    /// A value could not be encoded.
    #[error("encoding: {0}")]
    Encode(String),
}

/// Which engine a transaction runs on, for the few fragments where their SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (json1 functions).
    Sqlite,
    /// PostgreSQL (jsonb operators).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

impl Dialect {
    // On PostgreSQL a stored body is cast to jsonb only where it can be: a refused event may
    // hold `\u0000`, which jsonb rejects, and one failing cast would fail the whole statement
    // (a report, an erasure). CASE, because PostgreSQL does not promise AND's order.

    /// `column`'s JSON text holds an object; its `field` as text.
    pub fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => format!(
                "(CASE WHEN strpos({column}, '\\u0000') = 0 THEN {column}::jsonb ->> '{field}' END)"
            ),
        }
    }

    /// `column`'s JSON `field` as an integer (on PostgreSQL NULL when it is not one that fits).
    pub fn json_int(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => {
                let text = self.json_text(column, field);
                format!("(CASE WHEN {text} ~ '^-?[0-9]{{1,18}}$' THEN CAST({text} AS BIGINT) END)")
            }
        }
    }

    /// The statement that keeps the planner on index lookups for the rest of the
    /// transaction, where every read goes by key: PostgreSQL, misjudging how many rows a
    /// recursive walk of merges yields (thousands for a few), hashed the whole merge table
    /// for each walk, so each resolver round grew with every merge the fleet ever made. The
    /// walk to roots now probes by key whatever the planner thinks; the walk from a root to
    /// its members (erasure, under the identity lock) is still a join. SQLite looks rows up by
    /// index anyway.
    pub fn keyed_lookups(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(
                "SELECT set_config('enable_hashjoin', 'off', true),
                        set_config('enable_mergejoin', 'off', true)",
            ),
        }
    }

    /// `text` as central's key columns compare: byte for byte. On PostgreSQL the key columns
    /// are `COLLATE "C"` (the database's default may be a locale), and a recursive query whose
    /// first rows come from a parameter must say so; SQLite compares bytes by default.
    pub fn key_text(self, text: &str) -> String {
        match self {
            Dialect::Sqlite => text.to_string(),
            Dialect::Postgres => format!("{text} COLLATE \"C\""),
        }
    }

    /// A group's rows as the text of a JSON array of `[first, second]` pairs.
    pub fn json_pairs(self, first: &str, second: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_group_array(json_array({first}, {second}))"),
            Dialect::Postgres => {
                format!("CAST(json_agg(json_build_array({first}, {second})) AS TEXT)")
            }
        }
    }

    /// `column`'s JSON with `field` set to an empty array.
    pub fn json_clear_array(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_set({column}, '$.{field}', json('[]'))"),
            Dialect::Postgres => format!(
                "(CASE WHEN strpos({column}, '\\u0000') = 0 THEN jsonb_set({column}::jsonb, '{{{field}}}', '[]'::jsonb)::text ELSE {column} END)"
            ),
        }
    }
}

/// One transaction. Every method is one statement; errors abort the transaction (it rolls
/// back when dropped uncommitted).
#[allow(async_fn_in_trait)]
pub trait Tx {
    /// The engine, for the fragments that differ.
    fn dialect(&self) -> Dialect;

    /// Runs a statement; the rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs a query; every row.
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;

    /// The statements that take every key's lock until the transaction ends, so instances
    /// working on the same gateway, coupon or identity never interleave; in the order given
    /// (callers sort them, so two transactions never wait on each other in a circle); none for a key this
    /// transaction holds, or where one writer needs no locks. Sent with the statements that
    /// follow them, in one pipeline.
    fn lock_statements(&mut self, keys: &[String]) -> Vec<(String, Vec<Value>)>;

    /// The statement that reserves [`APPLIED_BLOCK`] fresh application-order numbers
    /// (`events.applied`); its one row holds the first.
    fn applied_block_sql(&self) -> &'static str;

    /// Runs `statements` in order; each one's rows. PostgreSQL sends them all before it reads
    /// an answer (one round trip); this default runs them one by one.
    async fn pipeline(
        &mut self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<Vec<Row>>, DbError> {
        let mut answers = Vec::with_capacity(statements.len());
        for (sql, params) in statements {
            answers.push(self.query(sql, params).await?);
        }
        Ok(answers)
    }

    /// The first of [`APPLIED_BLOCK`] fresh application-order numbers (`events.applied`).
    async fn applied_block(&mut self) -> Result<i64, DbError> {
        let sql = self.applied_block_sql();
        self.query_one(sql, &[]).await?.int(0)
    }

    /// The first row, if any.
    async fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The one row a query must return.
    async fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Type("the query returned no row".into()))
    }
}

/// How many numbers [`Tx::applied_block`] hands out at once (the advance step applies at most
/// this many events per round).
pub const APPLIED_BLOCK: i64 = 1024;

/// The output of a future that never waits: the SQLite engine's, whose every method completes
/// at once, driven on a blocking thread. One that does wait is a bug, reported as an error.
pub fn ready<T, E: From<DbError>>(
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => Err(E::from(DbError::Type(
            "a SQLite transaction waited on something".into(),
        ))),
    }
}

/// The rows `sql_prefix … IN (keys)` finds, `fixed` parameters first (a key may come back
/// more than once when `keys` repeats it).
pub async fn lookup_in(
    tx: &mut impl Tx,
    sql_prefix: &str,
    fixed: &[Value],
    keys: &[&str],
) -> Result<Vec<Row>, DbError> {
    let mut pipeline = Pipeline::new();
    let part = pipeline.add_in(sql_prefix, fixed, keys);
    Ok(pipeline.run(tx).await?.take(part))
}

/// The rows of `sql` for `rows` a chunk at a time (see [`Pipeline::add_values`]).
pub async fn query_values<const N: usize>(
    tx: &mut impl Tx,
    sql: &str,
    types: [&str; N],
    rows: &[[Value; N]],
) -> Result<Vec<Row>, DbError> {
    let mut pipeline = Pipeline::new();
    let part = pipeline.add_values(sql, types, rows);
    Ok(pipeline.run(tx).await?.take(part))
}

/// [`query_values`] for one text column.
pub async fn query_with_keys(
    tx: &mut impl Tx,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<Row>, DbError> {
    let rows: Vec<[Value; 1]> = keys.iter().map(|k| [Value::from(*k)]).collect();
    query_values(tx, sql, ["TEXT"], &rows).await
}
