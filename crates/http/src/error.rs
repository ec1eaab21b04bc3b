//! Errors as the Prometheus HTTP API reports them:
//! `{"status":"error","errorType":"bad_data","error":"…"}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use query::QueryError;
use store::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found",
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            error_type: "conflict",
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let (status, error_type) = match &e {
            QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            QueryError::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            QueryError::Storage(s) => return ApiError::from_storage(s),
        };
        ApiError {
            status,
            error_type,
            message: e.to_string(),
        }
    }
}

impl ApiError {
    fn from_storage(e: &StorageError) -> ApiError {
        match e {
            StorageError::Overloaded { .. } | StorageError::CannotPersist => {
                ApiError::unavailable(e.to_string())
            }
            StorageError::TooManySamples { .. } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error_type: "execution",
                message: e.to_string(),
            },
            e if e.is_client_error() => ApiError::bad_data(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<base::selector::SelectorError> for ApiError {
    fn from(e: base::selector::SelectorError) -> ApiError {
        ApiError::bad_data(e.0)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        ApiError::from_storage(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}
