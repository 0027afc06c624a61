//! Verification of a log against the head it records, over any [`EventLog`]. It only reads:
//! it never repairs, and it stops at the first position that does not hold.

use crate::chain::{ChainError, ChainVerifier};
use crate::log::{EventLog, LogError};
use crate::primitives::Head;

/// What a full verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head: Head,
}

/// Why a log did not verify: it could not be read, or its chain does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// Displays the [`ChainError`] alone, so a caller can put its own words before it.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// How many events verification reads at a time.
const VERIFY_PAGE: usize = 1000;

/// How far a long pass over the log has got: `position` of `head` (the head read at the
/// start, which is where the pass ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub position: u64,
    pub head: u64,
}

/// Recompute the whole chain from position 1 and compare it with the recorded head.
/// Appends made while it runs are past the head it read first and are not checked.
pub async fn verify_chain<L: EventLog>(log: &L) -> Result<VerifyReport, VerifyError> {
    verify_chain_with(log, |_| {}).await
}

/// [`verify_chain`], telling `progress` the last position checked after each page read
/// (once with position 0 before the first, so a caller learns the head early).
pub async fn verify_chain_with<L: EventLog>(
    log: &L,
    mut progress: impl FnMut(Progress),
) -> Result<VerifyReport, VerifyError> {
    let recorded = log.head().await?;
    let head = recorded.position;
    progress(Progress { position: 0, head });
    let mut verifier = ChainVerifier::new(log.log_id());
    // The next page is read while this one is checked: a database reads on its own thread
    // or server, so reading and hashing overlap instead of taking turns.
    let mut page = if head > 0 {
        log.read_from(0, VERIFY_PAGE).await?
    } else {
        Vec::new()
    };
    while let Some(last) = page.last().map(|e| e.position) {
        let more = last < head;
        let read_next = async {
            if more {
                log.read_from(last, VERIFY_PAGE).await
            } else {
                Ok(Vec::new())
            }
        };
        let check = async {
            for event in page.iter().take_while(|e| e.position <= head) {
                verifier.check(event)?;
            }
            Ok::<(), ChainError>(())
        };
        let (next, checked) = tokio::join!(read_next, check);
        checked?;
        progress(Progress {
            position: last.min(head),
            head,
        });
        page = next?;
    }
    let head = verifier.finish(recorded)?;
    Ok(VerifyReport {
        events: head.position,
        head,
    })
}

/// Check the end of the chain only: the last event's hash recomputes from its bytes and its
/// predecessor's hash, and the recorded head names it. Cheap enough for every start.
pub async fn verify_head<L: EventLog>(log: &L) -> Result<Head, VerifyError> {
    let recorded = log.head().await?;
    let tail = log
        .read_from(recorded.position.saturating_sub(2), 2)
        .await?;
    let mut verifier = match tail.first() {
        Some(prev) if recorded.position >= 2 && prev.position == recorded.position - 1 => {
            ChainVerifier::resume(
                log.log_id(),
                Head {
                    position: prev.position,
                    hash: prev.hash,
                },
            )
        }
        _ => ChainVerifier::new(log.log_id()),
    };
    let start = verifier.head().position;
    // Another writer may append between reading the head and the tail; those events are past
    // the recorded head, and checking them would fail `finish` on a sound log.
    for event in tail
        .iter()
        .filter(|e| e.position > start && e.position <= recorded.position)
    {
        verifier.check(event)?;
    }
    Ok(verifier.finish(recorded)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::chain::ChainProblem;
    use crate::envelope::{Opening, StoredEvent};
    use crate::log::{AppendError, ExpectedVersion, MemoryLog, NewEvent, StreamAppend};
    use crate::primitives::{Hash, LogId, StreamId, Timestamp, field_commitment};
    use crate::vocabulary::{Environment, TokenCreated, TokenEvent, TokenUsed};

    const LOG: LogId = LogId(Uuid::from_u128(0x7e));
    const TOKEN: Uuid = Uuid::from_u128(0xa);

    fn stream() -> StreamId {
        StreamId::for_token(TOKEN)
    }

    fn used(n: u128) -> NewEvent {
        NewEvent {
            event_id: Uuid::from_u128(n),
            recorded_at: Timestamp::from_micros(1_700_000_000_000_000 + n as i64),
            actor: "svc:ci".to_owned(),
            event: TokenEvent::Used(TokenUsed {
                ip: None,
                method: "POST".to_owned(),
                path: "/v1/verify".to_owned(),
                command: None,
                user_agent: None,
            }),
            openings: Vec::new(),
        }
    }

    fn created() -> NewEvent {
        let opening = Opening {
            field: TokenCreated::SECRET_FIELD.to_owned(),
            salt: [0x5a; 32],
            value: b"sha256-of-the-token".to_vec(),
        };
        NewEvent {
            event: TokenEvent::Created(TokenCreated {
                token_id: TOKEN,
                name: "ci".to_owned(),
                scopes: vec!["console:exec".to_owned()],
                environment: Environment::Test,
                expires_at: Timestamp::from_micros(1_800_000_000_000_000),
                created_by: "admin:alice".to_owned(),
                secret_commitment: field_commitment(&opening.field, &opening.salt, &opening.value),
                rotated_from: None,
                allowed_ips: Vec::new(),
            }),
            openings: vec![opening],
            ..used(1)
        }
    }

    /// A token's creation followed by `uses` uses, appended as two batches.
    async fn log_with(uses: u128) -> MemoryLog {
        let log = MemoryLog::new(LOG);
        log.append(vec![StreamAppend {
            stream_id: stream(),
            expected: ExpectedVersion::NoStream,
            events: vec![created()],
        }])
        .await
        .expect("creation appends");
        if uses > 0 {
            log.append(vec![StreamAppend {
                stream_id: stream(),
                expected: ExpectedVersion::Exact(1),
                events: (2..uses + 2).map(used).collect(),
            }])
            .await
            .expect("uses append");
        }
        log
    }

    /// Serves whatever events and head it is given, as an altered database or one still being
    /// appended to would. `MemoryLog` only ever holds what it sealed itself.
    struct Served {
        events: Vec<StoredEvent>,
        head: Head,
    }

    impl Served {
        async fn copy_of(log: &MemoryLog) -> Served {
            Served {
                events: log
                    .read_from(0, usize::MAX)
                    .await
                    .expect("memory log reads"),
                head: log.head().await.expect("memory log has a head"),
            }
        }

        fn head_at(&self, position: u64) -> Head {
            match position {
                0 => Head::GENESIS,
                p => Head {
                    position: p,
                    hash: self.events[p as usize - 1].hash,
                },
            }
        }
    }

    impl EventLog for Served {
        fn log_id(&self) -> LogId {
            LOG
        }

        async fn append(&self, _: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
            Err(AppendError::Unavailable(
                "a served log is read-only".to_owned(),
            ))
        }

        async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
            Ok(self
                .events
                .iter()
                .filter(|e| e.position > after)
                .take(limit)
                .cloned()
                .collect())
        }

        async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
            Ok(self
                .events
                .iter()
                .filter(|e| &e.stream_id == stream)
                .cloned()
                .collect())
        }

        async fn head(&self) -> Result<Head, LogError> {
            Ok(self.head)
        }

        async fn wait_for(&self, _: u64, _: Duration) -> Result<Head, LogError> {
            Ok(self.head)
        }
    }

    fn chain_error(position: u64, problem: ChainProblem) -> VerifyError {
        VerifyError::Chain(ChainError { position, problem })
    }

    #[tokio::test]
    async fn a_clean_log_verifies_with_its_event_count_and_head() {
        let log = log_with(4).await;
        let head = log.head().await.unwrap();
        assert_eq!(head.position, 5);

        assert_eq!(
            verify_chain(&log).await,
            Ok(VerifyReport { events: 5, head })
        );
        assert_eq!(verify_head(&log).await, Ok(head));
    }

    #[tokio::test]
    async fn an_empty_log_verifies_as_zero_events() {
        let log = MemoryLog::new(LOG);

        assert_eq!(
            verify_chain(&log).await,
            Ok(VerifyReport {
                events: 0,
                head: Head::GENESIS
            })
        );
        assert_eq!(verify_head(&log).await, Ok(Head::GENESIS));
    }

    #[tokio::test]
    async fn a_log_longer_than_a_page_verifies_across_pages() {
        let log = log_with(2 * VERIFY_PAGE as u128).await;
        let head = log.head().await.unwrap();

        let report = verify_chain(&log).await.expect("a sealed log verifies");

        assert_eq!(report.events, 2 * VERIFY_PAGE as u64 + 1);
        assert_eq!(report.head, head);
    }

    #[tokio::test]
    async fn progress_sees_increasing_positions_ending_at_the_head() {
        let log = log_with(2 * VERIFY_PAGE as u128 + 10).await;
        let head = log.head().await.unwrap().position;
        let mut seen = Vec::new();

        verify_chain_with(&log, |p| seen.push(p))
            .await
            .expect("a sealed log verifies");

        assert!(seen.iter().all(|p| p.head == head), "{seen:?}");
        let positions: Vec<u64> = seen.iter().map(|p| p.position).collect();
        let page = VERIFY_PAGE as u64;
        assert_eq!(positions, [0, page, 2 * page, head]);
    }

    #[tokio::test]
    async fn progress_on_an_empty_log_is_told_the_head_once() {
        let mut seen = Vec::new();

        verify_chain_with(&MemoryLog::new(LOG), |p| seen.push(p))
            .await
            .expect("an empty log verifies");

        assert_eq!(
            seen,
            [Progress {
                position: 0,
                head: 0
            }]
        );
    }

    #[tokio::test]
    async fn a_changed_event_is_reported_at_its_position_by_the_full_check_only() {
        let mut log = Served::copy_of(&log_with(4).await).await;
        log.events[2].bytes[20] ^= 0x01;

        let err = verify_chain(&log).await.unwrap_err();

        assert_eq!(err, chain_error(3, ChainProblem::HashMismatch));
        // The caller words its own refusal around this text, so it must be the chain's alone.
        assert!(err.to_string().starts_with("position 3: "), "{err}");
        // The start-up check reads only the last two events: that is what keeps it cheap.
        assert_eq!(verify_head(&log).await, Ok(log.head));
    }

    #[tokio::test]
    async fn a_changed_last_event_fails_both_checks() {
        let mut log = Served::copy_of(&log_with(4).await).await;
        log.events[4].bytes[20] ^= 0x01;

        assert_eq!(
            verify_chain(&log).await,
            Err(chain_error(5, ChainProblem::HashMismatch))
        );
        assert_eq!(
            verify_head(&log).await,
            Err(chain_error(5, ChainProblem::HashMismatch))
        );
    }

    #[tokio::test]
    async fn a_recorded_head_that_disagrees_with_the_last_event_fails_both_checks() {
        let mut log = Served::copy_of(&log_with(4).await).await;
        let computed = log.head.hash;
        log.head.hash = Hash([0xee; 32]);
        let expected = || {
            Err(chain_error(
                5,
                ChainProblem::HeadHashMismatch {
                    recorded: Hash([0xee; 32]),
                    computed,
                },
            ))
        };

        assert_eq!(verify_chain(&log).await.map(|r| r.head), expected());
        assert_eq!(verify_head(&log).await, expected());
    }

    #[tokio::test]
    async fn a_recorded_head_past_the_last_event_fails_both_checks() {
        let mut log = Served::copy_of(&log_with(4).await).await;
        log.head.position = 6;

        assert!(
            matches!(
                verify_chain(&log).await,
                Err(VerifyError::Chain(ChainError {
                    problem: ChainProblem::HeadPositionMismatch {
                        recorded: 6,
                        found: 5
                    },
                    ..
                }))
            ),
            "full check"
        );
        assert!(
            matches!(verify_head(&log).await, Err(VerifyError::Chain(_))),
            "head check"
        );
    }

    #[tokio::test]
    async fn events_appended_after_the_head_was_read_are_left_for_the_next_check() {
        let mut log = Served::copy_of(&log_with(4).await).await;
        for position in 0..=4 {
            log.head = log.head_at(position);

            assert_eq!(
                verify_chain(&log).await,
                Ok(VerifyReport {
                    events: position,
                    head: log.head
                }),
                "full check at head {position}"
            );
            assert_eq!(
                verify_head(&log).await,
                Ok(log.head),
                "head check at head {position}"
            );
        }
    }
}
