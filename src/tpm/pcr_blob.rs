//! The PCR values of a quote in the layout the verifier parses: the
//! tpm2-tools `pcrs` output file, a little-endian dump of host structs
//! with padding (TPML_PCR_SELECTION with 16 fixed slots, then a count of
//! TPML_DIGEST blocks of 8 fixed `{u16 size, [u8; 64]}` slots each).

/// Selection slots in a TPML_PCR_SELECTION (TPM2_NUM_PCR_BANKS in tss2).
const SELECTION_SLOTS: usize = 16;
/// Digest slots in a TPML_DIGEST (a TPM2_PCR_Read returns at most 8).
const DIGEST_SLOTS: usize = 8;
/// Largest digest a slot holds (TPMU_HA).
const DIGEST_BYTES: usize = 64;
/// Bytes of one TPML_DIGEST: count u32 + 8 × (u16 size + 64 bytes).
const TPML_DIGEST_BYTES: usize = 4 + DIGEST_SLOTS * (2 + DIGEST_BYTES);

/// Encodes one bank's PCR values. `pcrs` are the selected PCR numbers
/// (0–23) and `values` their digests, both in ascending PCR order.
pub fn encode(hash_alg_id: u16, pcrs: &[u8], values: &[Vec<u8>]) -> Vec<u8> {
    let chunks = values.len().div_ceil(DIGEST_SLOTS);
    let mut out = Vec::with_capacity(4 + SELECTION_SLOTS * 8 + 4 + chunks * TPML_DIGEST_BYTES);
    out.extend(1u32.to_le_bytes());
    let mut select = [0u8; 3];
    for &pcr in pcrs {
        select[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }
    // Slot 0: hash (u16 LE), sizeofSelect = 3, pcrSelect[3], one unused select byte, padding.
    out.extend(hash_alg_id.to_le_bytes());
    out.push(3);
    out.extend(select);
    out.extend([0, 0]);
    out.resize(4 + SELECTION_SLOTS * 8, 0);
    out.extend(u32::try_from(chunks).unwrap_or(u32::MAX).to_le_bytes());
    for chunk in values.chunks(DIGEST_SLOTS) {
        let start = out.len();
        out.extend(u32::try_from(chunk.len()).unwrap_or(0).to_le_bytes());
        for value in chunk {
            let len = value.len().min(DIGEST_BYTES);
            out.extend(u16::try_from(len).unwrap_or(0).to_le_bytes());
            out.extend(&value[..len]);
            out.resize(out.len() + DIGEST_BYTES - len, 0);
        }
        out.resize(start + TPML_DIGEST_BYTES, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §4.4's worked layout: PCR 16 only, SHA-256, 668 bytes.
    #[test]
    fn pcr16_only_sha256_matches_the_worked_layout() {
        let value: Vec<u8> = (1..=32).collect();
        let blob = encode(0x000B, &[16], std::slice::from_ref(&value));
        assert_eq!(blob.len(), 668);
        assert_eq!(&blob[0..4], &[1, 0, 0, 0]);
        assert_eq!(
            &blob[4..12],
            &[0x0b, 0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert!(
            blob[12..132].iter().all(|b| *b == 0),
            "15 empty selection slots"
        );
        assert_eq!(&blob[132..136], &[1, 0, 0, 0], "one TPML_DIGEST");
        assert_eq!(&blob[136..140], &[1, 0, 0, 0], "one digest in it");
        assert_eq!(&blob[140..142], &[0x20, 0x00]);
        assert_eq!(&blob[142..174], value.as_slice());
        assert!(
            blob[174..].iter().all(|b| *b == 0),
            "zero padding and 7 empty slots"
        );
    }

    #[test]
    fn eleven_pcrs_split_eight_and_three_in_ascending_order() {
        let pcrs: Vec<u8> = vec![0, 1, 2, 3, 4, 5, 6, 7, 10, 16, 23];
        let values: Vec<Vec<u8>> = pcrs.iter().map(|p| vec![*p; 32]).collect();
        let blob = encode(0x000B, &pcrs, &values);
        assert_eq!(blob.len(), 136 + 2 * 532);
        assert_eq!(
            &blob[7..10],
            &[0xff, 0x04, 0x81],
            "select bits for 0-7, 10, 16, 23"
        );
        assert_eq!(&blob[132..136], &[2, 0, 0, 0]);
        assert_eq!(&blob[136..140], &[8, 0, 0, 0]);
        assert_eq!(&blob[136 + 532..140 + 532], &[3, 0, 0, 0]);
        // First value of the second block is PCR 10's.
        let second = 140 + 532;
        assert_eq!(&blob[second..second + 2], &[32, 0]);
        assert_eq!(blob[second + 2], 10);
    }

    #[test]
    fn sha384_values_use_their_full_length() {
        let blob = encode(0x000C, &[16], &[vec![7; 48]]);
        assert_eq!(&blob[140..142], &[48, 0]);
        assert_eq!(blob[142 + 47], 7);
        assert_eq!(blob[142 + 48], 0);
    }
}
