//! The client's errors, mapped to what the log contract answers.

use tokenledger_events::{AppendError, LogError};

/// What one failed KurrentDB call means for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The expected revision did not hold: another writer moved the head. The append is
    /// decided again at the new head.
    HeadMoved,
    /// The stream does not exist (yet): an empty log.
    NoStream,
    /// Anything else: the server cannot be used now. The message names the server (password
    /// hidden) and what went wrong.
    Unavailable(String),
}

impl Failure {
    pub fn classify(e: &kurrentdb::Error, target: &str) -> Failure {
        use kurrentdb::Error as E;
        let unavailable =
            |what: String| Failure::Unavailable(format!("KurrentDB at {target}: {what}"));
        match e {
            E::WrongExpectedVersion { .. } => Failure::HeadMoved,
            E::ResourceNotFound => Failure::NoStream,
            E::AccessDenied => unavailable(
                "access denied; check the user and password in DATABASE_URL and the stream's ACL"
                    .into(),
            ),
            E::DeadlineExceeded => unavailable("no answer before the deadline".into()),
            E::ConnectionClosed => unavailable("the connection closed".into()),
            E::GrpcConnectionError(kurrentdb::GrpcConnectionError::MaxDiscoveryAttemptReached(
                n,
            )) => unavailable(format!("no node found after {n} discovery attempts")),
            E::GrpcConnectionError(kurrentdb::GrpcConnectionError::Grpc(detail)) => {
                unavailable(format!(
                    "cannot connect (is it running, and does ?tls= match it?): {}",
                    grpc_message(detail)
                ))
            }
            E::NotLeaderException(_) => unavailable(
                "the node is a follower; writes need the leader (add ?nodePreference=leader)"
                    .into(),
            ),
            E::ResourceDeleted => unavailable("the log's stream was deleted".into()),
            E::UnsupportedFeature => {
                unavailable("the server does not support this operation".into())
            }
            other => unavailable(other.to_string()),
        }
    }

    /// The append error this failure is, when it ends an append.
    pub fn append_error(self) -> AppendError {
        match self {
            Failure::HeadMoved => AppendError::Unavailable(
                "the log's head kept moving under this append; try again".into(),
            ),
            Failure::NoStream => AppendError::Unavailable("the log's stream does not exist".into()),
            Failure::Unavailable(m) => AppendError::Unavailable(m),
        }
    }

    /// The log error this failure is, when it ends a read.
    pub fn log_error(self) -> LogError {
        match self {
            Failure::HeadMoved => LogError::Unavailable("the head moved during a read".into()),
            Failure::NoStream => LogError::Unavailable("the log's stream does not exist".into()),
            Failure::Unavailable(m) => LogError::Unavailable(m),
        }
    }
}

/// The message of a rendered gRPC status (`status: ..., message: "...", details: ...`), or
/// the whole text when it has none.
fn grpc_message(detail: &str) -> &str {
    detail
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(detail, |(message, _)| message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurrentdb::{CurrentRevision, Error as E, StreamState};

    const TARGET: &str = "kurrentdb://admin:***@db:2113";

    #[test]
    fn a_moved_head_is_decided_again_and_a_missing_stream_is_an_empty_log() {
        let moved = E::WrongExpectedVersion {
            expected: StreamState::StreamRevision(4),
            current: CurrentRevision::Current(5),
        };
        assert_eq!(Failure::classify(&moved, TARGET), Failure::HeadMoved);
        assert_eq!(
            Failure::classify(&E::ResourceNotFound, TARGET),
            Failure::NoStream
        );
    }

    #[test]
    fn every_other_error_is_unavailable_and_names_the_server() {
        let cases = [
            (E::AccessDenied, "access denied"),
            (E::DeadlineExceeded, "deadline"),
            (E::ConnectionClosed, "connection closed"),
            (E::ResourceDeleted, "deleted"),
            (E::UnsupportedFeature, "does not support"),
            (E::ServerError("boom".into()), "boom"),
            (
                E::NotLeaderException(kurrentdb::Endpoint {
                    host: "other".into(),
                    port: 2113,
                }),
                "leader",
            ),
        ];
        for (e, words) in cases {
            let Failure::Unavailable(m) = Failure::classify(&e, TARGET) else {
                panic!("{e:?} should be unavailable");
            };
            assert!(
                m.starts_with("KurrentDB at kurrentdb://admin:***@db:2113: "),
                "{m}"
            );
            assert!(m.contains(words), "{m}");
            assert!(!m.contains("changeit"), "{m}");
        }
    }

    #[test]
    fn a_connection_failure_says_what_to_check_and_keeps_the_clients_reason() {
        let e = E::GrpcConnectionError(kurrentdb::GrpcConnectionError::Grpc(
            r#"status: Unknown, message: "client error (Connect)", details: [], metadata: MetadataMap { headers: {} }"#
                .into(),
        ));
        let Failure::Unavailable(m) = Failure::classify(&e, TARGET) else {
            panic!("unavailable");
        };
        assert_eq!(
            m,
            "KurrentDB at kurrentdb://admin:***@db:2113: cannot connect (is it running, and does ?tls= match it?): client error (Connect)"
        );
        let e = E::GrpcConnectionError(kurrentdb::GrpcConnectionError::MaxDiscoveryAttemptReached(
            10,
        ));
        let Failure::Unavailable(m) = Failure::classify(&e, TARGET) else {
            panic!("unavailable");
        };
        assert!(
            m.ends_with("no node found after 10 discovery attempts"),
            "{m}"
        );
    }

    #[test]
    fn failures_become_the_contracts_errors() {
        assert!(matches!(
            Failure::Unavailable("x".into()).append_error(),
            AppendError::Unavailable(m) if m == "x"
        ));
        assert!(matches!(
            Failure::HeadMoved.append_error(),
            AppendError::Unavailable(_)
        ));
        assert!(matches!(
            Failure::Unavailable("y".into()).log_error(),
            LogError::Unavailable(m) if m == "y"
        ));
        assert!(matches!(
            Failure::NoStream.log_error(),
            LogError::Unavailable(_)
        ));
    }
}
