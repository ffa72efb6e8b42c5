//! API version negotiation: the versions this client speaks, and the choice per API against
//! what a broker advertises in its ApiVersions response.

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::ApiVersion;

/// The versions of each API this client's code builds requests for and reads responses of.
/// Every range lies inside what the `kafka-protocol` codec knows (checked by a test).
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    // From v4 a request can say not to create topics; earlier versions always may.
    (ApiKey::Metadata, 4, 12),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    // v1 cannot ask for "every topic" (null topics); v10 addresses topics by id.
    (ApiKey::OffsetFetch, 2, 9),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::DeleteGroups, 0, 2),
    // The consumer's position validation (KIP-320); v2 is the first with the current leader
    // epoch, v3 the first with a replica id (-1: a consumer).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// Our version range for `api`, if this client speaks it at all.
pub fn client_range(api: ApiKey) -> Option<(i16, i16)> {
    CLIENT_VERSIONS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

/// The version chosen per API for one broker, and what that broker advertised.
#[derive(Debug, Clone, Default)]
pub struct NegotiatedVersions {
    chosen: HashMap<i16, i16>,
    advertised: HashMap<i16, (i16, i16)>,
}

impl NegotiatedVersions {
    /// Chooses, for every API in `ours`, the highest version both sides speak:
    /// min(our max, broker max), provided it is at least max(our min, broker min).
    /// APIs without overlap (or not advertised) are left out; calling them fails with
    /// [`crate::ClientError::UnsupportedApi`].
    pub fn negotiate(ours: &[(ApiKey, i16, i16)], broker: &[ApiVersion]) -> NegotiatedVersions {
        let advertised: HashMap<i16, (i16, i16)> = broker
            .iter()
            .map(|v| (v.api_key, (v.min_version, v.max_version)))
            .collect();
        let mut chosen = HashMap::new();
        for &(api, our_min, our_max) in ours {
            let Some(&(b_min, b_max)) = advertised.get(&(api as i16)) else {
                continue;
            };
            let v = our_max.min(b_max);
            if v >= our_min.max(b_min) {
                chosen.insert(api as i16, v);
            }
        }
        NegotiatedVersions { chosen, advertised }
    }

    /// The version to use for `api`, if both sides share one.
    pub fn version(&self, api: ApiKey) -> Option<i16> {
        self.chosen.get(&(api as i16)).copied()
    }

    /// The range the broker advertised for `api`.
    pub fn advertised(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.advertised.get(&(api as i16)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn av(api: ApiKey, min: i16, max: i16) -> ApiVersion {
        let mut v = ApiVersion::default();
        v.api_key = api as i16;
        v.min_version = min;
        v.max_version = max;
        v
    }

    #[test]
    fn client_ranges_lie_inside_the_codec() {
        for &(api, min, max) in CLIENT_VERSIONS {
            let valid = api.valid_versions();
            assert!(min <= max, "{api:?}");
            assert!(
                valid.min <= min && max <= valid.max,
                "{api:?} {min}..={max} outside the codec's {}..={}",
                valid.min,
                valid.max
            );
        }
    }

    #[test]
    fn picks_min_of_maxima_and_drops_disjoint_ranges() {
        let ours = [
            (ApiKey::Metadata, 1, 12),
            (ApiKey::OffsetFetch, 2, 9),
            (ApiKey::ListOffsets, 1, 8),
            (ApiKey::DeleteGroups, 0, 2),
            (ApiKey::CreateTopics, 2, 7),
        ];
        let broker = [
            av(ApiKey::Metadata, 0, 13),    // broker newer: our max
            av(ApiKey::OffsetFetch, 1, 5),  // broker older: its max
            av(ApiKey::ListOffsets, 9, 12), // broker only newer than ours: no overlap
            av(ApiKey::DeleteGroups, 0, 0), // below our... still inside: 0
            av(ApiKey::Produce, 3, 11),     // not ours: ignored
        ];
        let n = NegotiatedVersions::negotiate(&ours, &broker);
        assert_eq!(n.version(ApiKey::Metadata), Some(12));
        assert_eq!(n.version(ApiKey::OffsetFetch), Some(5));
        assert_eq!(n.version(ApiKey::ListOffsets), None);
        assert_eq!(n.version(ApiKey::DeleteGroups), Some(0));
        assert_eq!(n.version(ApiKey::CreateTopics), None, "not advertised");
        assert_eq!(n.version(ApiKey::Produce), None, "not ours");
        assert_eq!(n.advertised(ApiKey::ListOffsets), Some((9, 12)));
    }

    #[test]
    fn broker_range_entirely_below_ours_is_refused() {
        let n = NegotiatedVersions::negotiate(
            &[(ApiKey::OffsetFetch, 2, 9)],
            &[av(ApiKey::OffsetFetch, 0, 1)],
        );
        assert_eq!(n.version(ApiKey::OffsetFetch), None);
    }
}
