//! Who is calling: the metadata every weft RPC carries, the interceptor that
//! checks it on the server, and the helper that attaches it on the client.
//!
//! Headers: `weft-experiment: NAME` and `authorization: Bearer TOKEN` for
//! calls about an experiment (control and data, including host-to-host);
//! `weft-task: JOB:INDEX` on `TaskService` calls says which task is meant.

use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::cluster::TaskId;

/// The experiment a call is about.
pub const EXPERIMENT_HEADER: &str = "weft-experiment";
/// The task a `TaskService` call is for.
pub const TASK_HEADER: &str = "weft-task";

/// Who a checked call comes from; the interceptor puts it in the request's
/// extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client holding this experiment's token.
    Experiment(String),
    /// A client holding the host's admin token.
    Admin,
    /// A client with no credentials, on a host that lets them in (its own
    /// cluster task; creating experiments when it has no admin token).
    Anonymous,
}

impl Caller {
    /// The caller of a request that went through [`AuthInterceptor`].
    pub fn of<T>(request: &Request<T>) -> Result<&Caller, Status> {
        request.extensions().get::<Caller>().ok_or_else(|| Status::internal("the request was not authenticated"))
    }
}

/// Decides who a call's metadata says it is from.
pub trait Authenticator: Send + Sync + 'static {
    /// `unauthenticated` without a needed token, `permission-denied` with a
    /// token that is not the experiment's.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status>;
}

/// The tonic interceptor in front of every weft service of a host.
#[derive(Clone)]
pub struct AuthInterceptor(pub Arc<dyn Authenticator>);

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.0.authenticate(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The experiment named by a call, if any.
pub fn experiment_of(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    metadata
        .get(EXPERIMENT_HEADER)
        .map(|v| v.to_str().map_err(|_| Status::invalid_argument("the weft-experiment header is not ASCII")))
        .transpose()
}

/// The bearer token of a call, if any.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else { return Ok(None) };
    let value = value.to_str().map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?;
    value
        .strip_prefix("Bearer ")
        .map(Some)
        .ok_or_else(|| Status::unauthenticated("the authorization header must be 'Bearer TOKEN'"))
}

/// The task a `TaskService` call is for, if it names one.
pub fn task_of(metadata: &MetadataMap) -> Result<Option<TaskId>, Status> {
    let Some(value) = metadata.get(TASK_HEADER) else { return Ok(None) };
    let bad = || Status::invalid_argument("the weft-task header must be JOB:INDEX");
    let (job, index) = value.to_str().map_err(|_| bad())?.rsplit_once(':').ok_or_else(bad)?;
    Ok(Some(TaskId::new(job, index.parse().map_err(|_| bad())?)))
}

/// A gRPC status code as weft spells codes: `permission-denied`.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Compares tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    use sha2::Digest;
    // Digests have one length: comparing them takes the same time whatever
    // the tokens' lengths and contents.
    let (a, b) = (sha2::Sha256::digest(a.as_bytes()), sha2::Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a client attaches to every call: which experiment (with its token)
/// and, for `TaskService`, which task.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The experiment and its token, if calls are about one.
    pub experiment: Option<(String, String)>,
    /// The host's admin token, sent when no experiment is.
    pub admin: Option<String>,
}

impl Credentials {
    /// Credentials of `experiment`, proven by `token`.
    pub fn experiment(name: impl Into<String>, token: impl Into<String>) -> Self {
        Credentials { experiment: Some((name.into(), token.into())), admin: None }
    }

    /// Adds the headers to `request`, plus `weft-task` when `task` is given.
    pub fn attach<T>(&self, request: &mut Request<T>, task: Option<&TaskId>) -> Result<(), Status> {
        let md = request.metadata_mut();
        let value = |s: String| {
            s.parse::<AsciiMetadataValue>().map_err(|_| {
                Status::invalid_argument(format!("'{s}' cannot be sent as a header (it has control characters)"))
            })
        };
        if let Some((name, token)) = &self.experiment {
            md.insert(EXPERIMENT_HEADER, value(name.clone())?);
            md.insert("authorization", value(format!("Bearer {token}"))?);
        } else if let Some(token) = &self.admin {
            md.insert("authorization", value(format!("Bearer {token}"))?);
        }
        if let Some(t) = task {
            md.insert(TASK_HEADER, value(format!("{}:{}", t.job, t.index))?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal_whatever_their_lengths() {
        assert!(same_token("a-token-0123456789", "a-token-0123456789"));
        assert!(!same_token("a-token-0123456789", "a-token-0123456788"));
        assert!(!same_token("a-token-0123456789", "a-token-01234567890"));
        assert!(!same_token("", "x"));
    }

    #[test]
    fn headers_round_trip() {
        let mut req = Request::new(());
        let task = TaskId::new("ps", 3);
        Credentials::experiment("alice", "s3cret").attach(&mut req, Some(&task)).unwrap();
        assert_eq!(experiment_of(req.metadata()).unwrap(), Some("alice"));
        assert_eq!(bearer_token(req.metadata()).unwrap(), Some("s3cret"));
        assert_eq!(task_of(req.metadata()).unwrap(), Some(task));
    }

    #[test]
    fn malformed_headers_are_named() {
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Basic abc".parse().unwrap());
        req.metadata_mut().insert(TASK_HEADER, "ps".parse().unwrap());
        assert!(bearer_token(req.metadata()).unwrap_err().message().contains("Bearer TOKEN"));
        assert!(task_of(req.metadata()).unwrap_err().message().contains("JOB:INDEX"));
        assert!(Credentials::experiment("bob", "tok\nen").attach(&mut req, None).is_err());
    }

    #[test]
    fn code_names_are_kebab_case() {
        assert_eq!(code_name(tonic::Code::PermissionDenied), "permission-denied");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "unauthenticated");
    }

    #[test]
    fn token_comparison() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
    }
}
