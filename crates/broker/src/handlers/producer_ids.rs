//! InitProducerId: hands idempotent producers their id and epoch.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;

/// InitProducerId: a fresh id, or (KIP-360) the same id with the next epoch.
pub(super) fn init_producer_id(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return resp;
    }
    // KIP-360: an idempotent producer may ask to bump its epoch after a fatal sequence error.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match ctx.cluster.next_producer_id() {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate producer id");
            resp.error_code = crate::errors::topic_code(&e);
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
        }
    }
    resp
}
