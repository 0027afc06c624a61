//! The writer's remembered state against a second writer on the same database (another node,
//! or the CLI beside a server): a wrong guess of the head, of a token row or of the audit
//! checkpoint must cost a retry under the lock, never a wrong answer. PostgreSQL runs too when
//! `TEST_DATABASE_URL` names a server.

use sqlx::Connection as _;
use tokenledger_events::chain::field_commitment;
use tokenledger_events::{
    AppendError, Environment, EventLog, ExpectedVersion, NewEvent, Opening, StoredEvent,
    StreamAppend, StreamId, Timestamp, TokenCreated, TokenEvent, TokenRevoked, TokenUsed,
};
use uuid::Uuid;

use super::{AuditFilter, DatabaseUrl, Store};
use tokenledger_events::verify_chain;

/// A scratch database, dropped (PostgreSQL) or deleted (SQLite) at the end, failed or not.
struct Scratch {
    url: DatabaseUrl,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    fn sqlite() -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/log.db?mode=rwc", dir.path().display());
        Scratch {
            url: DatabaseUrl::parse(&url).expect("url"),
            pg: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Option<Scratch> {
        let admin = std::env::var("TEST_DATABASE_URL").ok()?;
        let name = format!("tl_store_{}", Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.split_once('?').map_or(admin.as_str(), |(b, _)| b);
        let (server, _) = base.rsplit_once('/').expect("admin url names a database");
        Some(Scratch {
            url: DatabaseUrl::parse(&format!("{server}/{name}")).expect("url"),
            pg: Some((admin, name)),
            _dir: None,
        })
    }

    /// Two nodes on this database.
    async fn nodes(&self) -> (Store, Store) {
        let a = Store::open(&self.url).await.expect("open a");
        let b = Store::open(&self.url).await.expect("open b");
        (a, b)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop may run while a test unwinds: a runtime of its own, on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn event(event: TokenEvent, openings: Vec<Opening>) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: Timestamp::from_micros(1_700_000_000_000_000),
        actor: "test:store".into(),
        event,
        openings,
    }
}

fn created(token_id: Uuid) -> NewEvent {
    let salt = [3u8; 32];
    let value = token_id.as_bytes().to_vec();
    event(
        TokenEvent::Created(TokenCreated {
            token_id,
            name: "store test".into(),
            scopes: vec!["console:exec".into()],
            environment: Environment::Test,
            expires_at: Timestamp::from_micros(1_900_000_000_000_000),
            created_by: "test:store".into(),
            secret_commitment: field_commitment(TokenCreated::SECRET_FIELD, &salt, &value),
            rotated_from: None,
            allowed_ips: Vec::new(),
        }),
        vec![Opening {
            field: TokenCreated::SECRET_FIELD.into(),
            salt,
            value,
        }],
    )
}

fn used() -> NewEvent {
    event(
        TokenEvent::Used(TokenUsed {
            ip: Some("127.0.0.1".into()),
            method: "POST".into(),
            path: "/api/admin/console".into(),
            command: Some("ping".into()),
            user_agent: None,
        }),
        Vec::new(),
    )
}

fn revoked() -> NewEvent {
    event(
        TokenEvent::Revoked(TokenRevoked {
            actor: "user:test".into(),
            reason: None,
        }),
        Vec::new(),
    )
}

fn one(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream_id: stream.clone(),
        expected,
        events,
    }]
}

async fn append(store: &Store, batch: Vec<StreamAppend>) -> Vec<StoredEvent> {
    store.append(batch).await.expect("append")
}

/// The audit view answers one row per event, read from the log itself.
async fn audit_is_at_head(store: &Store) {
    let head = store.head().await.expect("head").position;
    let page = store
        .audit(&AuditFilter::everything())
        .await
        .expect("audit");
    let positions: Vec<u64> = page.rows.iter().map(|r| r.position).collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "one row per event"
    );
    assert_eq!(page.total, head);
}

async fn a_stale_head_costs_a_retry_not_an_error(db: Scratch) {
    let (a, b) = db.nodes().await;
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    append(
        &a,
        one(&s, ExpectedVersion::NoStream, vec![created(id), used()]),
    )
    .await;
    // A remembers head 2 and the token at one use; B moves both.
    append(&b, one(&s, ExpectedVersion::Any, vec![used()])).await;
    let third = append(&a, one(&s, ExpectedVersion::Any, vec![used()])).await;
    assert_eq!(
        (third[0].position, third[0].stream_version),
        (4, 4),
        "appended after B's event"
    );
    let row = a.token(id).await.expect("token").expect("row");
    assert_eq!(row.use_count, 3, "the token row folds B's use too");
    assert_eq!(verify_chain(&a).await.expect("chain").events, 4);
    audit_is_at_head(&a).await;
}

async fn a_retry_is_answered_with_the_stored_events(db: Scratch) {
    let (a, _) = db.nodes().await;
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    let batch = one(&s, ExpectedVersion::NoStream, vec![created(id)]);
    let first = append(&a, batch.clone()).await;
    let use_batch = one(&s, ExpectedVersion::Any, vec![used()]);
    let used_once = append(&a, use_batch.clone()).await;
    // Neither retry appends: one would conflict, the other would be a second use.
    assert_eq!(append(&a, batch).await, first);
    assert_eq!(append(&a, use_batch).await, used_once);
    assert_eq!(a.head().await.expect("head").position, 2);
}

async fn a_revocation_by_another_writer_closes_the_stream(db: Scratch) {
    let (a, b) = db.nodes().await;
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    append(
        &a,
        one(&s, ExpectedVersion::NoStream, vec![created(id), used()]),
    )
    .await;
    // A remembers the token unrevoked.
    append(&b, one(&s, ExpectedVersion::Exact(2), vec![revoked()])).await;
    let refused = a.append(one(&s, ExpectedVersion::Any, vec![used()])).await;
    assert_eq!(refused, Err(AppendError::Closed { stream: s.clone() }));
    assert_eq!(a.head().await.expect("head").position, 3);
    audit_is_at_head(&a).await;
}

async fn address_uses_written_by_two_writers_equal_a_rebuild(db: Scratch) {
    let (a, b) = db.nodes().await;
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    append(
        &a,
        one(&s, ExpectedVersion::NoStream, vec![created(id), used()]),
    )
    .await;
    // Both writers add uses from the same address: the stored row adds them up.
    append(&b, one(&s, ExpectedVersion::Any, vec![used(), used()])).await;
    append(&a, one(&s, ExpectedVersion::Any, vec![used()])).await;

    let live = a.addresses().await.expect("addresses");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!((live[0].token_id, live[0].uses), (id, 4));
    let times: Vec<_> = a
        .audit(&AuditFilter::everything())
        .await
        .expect("audit")
        .rows
        .iter()
        .filter(|r| r.ip.is_some())
        .map(|r| r.occurred_at)
        .collect();
    assert_eq!(live[0].first_seen, times[0]);
    assert_eq!(live[0].last_seen, *times.last().expect("uses"));

    a.rebuild_projections().await.expect("rebuild");
    assert_eq!(a.addresses().await.expect("addresses"), live);
}

async fn the_stored_tree_matches_the_events_and_proves_them(db: Scratch) {
    use tokenledger_events::merkle;
    let (a, b) = db.nodes().await;
    for n in 0..5 {
        let id = Uuid::now_v7();
        let s = StreamId::for_token(id);
        let writer = if n % 2 == 0 { &a } else { &b };
        append(
            writer,
            one(&s, ExpectedVersion::NoStream, vec![created(id), used()]),
        )
        .await;
        append(
            writer,
            one(&s, ExpectedVersion::Any, vec![used(), used(), used()]),
        )
        .await;
    }
    let events = a.read_from(0, 1000).await.expect("events");
    let head = events.len() as u64;
    assert_eq!(head, 25);
    // The roots of every size, computed from the event bytes alone.
    let mut edge = merkle::RightEdge::new();
    let mut roots = vec![merkle::EMPTY_ROOT];
    for e in &events {
        edge.append(&merkle::leaf_hash(&e.bytes)).expect("append");
        roots.push(edge.root());
    }
    for size in 1..=head {
        assert_eq!(
            a.tree_root(size).await.expect("root"),
            roots[size as usize],
            "size {size}"
        );
    }
    for (i, e) in events.iter().enumerate() {
        let proof = a.inclusion_proof(e.position, head).await.expect("proof");
        merkle::verify_inclusion(
            &merkle::leaf_hash(&e.bytes),
            i as u64,
            head,
            &roots[head as usize],
            &proof,
        )
        .expect("inclusion verifies");
    }
    for old in 1..head {
        let proof = a.consistency_proof(old, head).await.expect("consistency");
        merkle::verify_consistency(
            old,
            &roots[old as usize],
            head,
            &roots[head as usize],
            &proof,
        )
        .expect("consistency verifies");
    }
    assert!(
        a.tree_root(head + 1).await.is_err(),
        "no root past the head"
    );
}

async fn audit_pages_filtered_by_action_count_and_list_the_same_rows(db: Scratch) {
    use tokenledger_projections::AuditAction;
    let (a, _) = db.nodes().await;
    for n in 0..4 {
        let id = Uuid::now_v7();
        let s = StreamId::for_token(id);
        append(
            &a,
            one(
                &s,
                ExpectedVersion::NoStream,
                vec![created(id), used(), used()],
            ),
        )
        .await;
        if n % 2 == 0 {
            append(&a, one(&s, ExpectedVersion::Any, vec![revoked()])).await;
        }
    }
    let every = a
        .audit(&AuditFilter::everything())
        .await
        .expect("audit")
        .rows;
    for action in AuditAction::ALL {
        let page = a
            .audit(&AuditFilter {
                action: Some(action),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("audit");
        let expected: Vec<u64> = every
            .iter()
            .filter(|r| r.action == action)
            .map(|r| r.position)
            .collect();
        assert_eq!(
            page.rows.iter().map(|r| r.position).collect::<Vec<_>>(),
            expected,
            "{action:?}"
        );
        assert_eq!(page.total, expected.len() as u64, "{action:?} total");
    }
    // A page of uses from a position on.
    let since = every[5].occurred_at;
    let uses = a
        .audit(&AuditFilter {
            action: Some(AuditAction::Used),
            since: Some(since),
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let expected: Vec<u64> = every
        .iter()
        .filter(|r| r.action == AuditAction::Used && r.occurred_at >= since)
        .map(|r| r.position)
        .collect();
    assert_eq!(uses.total, expected.len() as u64);
    assert_eq!(
        uses.rows.iter().map(|r| r.position).collect::<Vec<_>>(),
        expected[..2]
    );
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Scratch::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = super::Scratch::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    a_stale_head_costs_a_retry_not_an_error,
    a_retry_is_answered_with_the_stored_events,
    a_revocation_by_another_writer_closes_the_stream,
    address_uses_written_by_two_writers_equal_a_rebuild,
    the_stored_tree_matches_the_events_and_proves_them,
    audit_pages_filtered_by_action_count_and_list_the_same_rows,
);
