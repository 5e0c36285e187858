// Bit-exact conversions between f32 and IEEE binary16 on u32 bit patterns (the rules are in
// shaders/cast.wgsl's header): appended to the source of every kernel that stores f16 words, so
// a stored f16 is the same round-to-nearest-even value on every device and in the CPU twins (the
// `half` crate's f16::from_f32). No `enable f16`.

// f32 bits → f16 bits (low 16 bits of the result), round to nearest even.
fn f32_to_f16_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let exp = (x >> 23u) & 0xffu;
    let man = x & 0x7fffffu;
    if (exp == 0xffu) {
        // inf stays inf; a NaN keeps its top 10 payload bits and is made quiet.
        var quiet = 0u;
        if (man != 0u) { quiet = 0x200u; }
        return sign | 0x7c00u | quiet | (man >> 13u);
    }
    let half_exp = i32(exp) - 127 + 15;
    if (half_exp >= 31) {
        return sign | 0x7c00u;
    }
    if (half_exp <= 0) {
        // f16 subnormal (or zero): m = (1.man · 2^(exp-127)) / 2^-24, shifted right by
        // 14 - half_exp ∈ [14, 24]; below that nothing is left but the sign.
        if (14 - half_exp > 24) { return sign; }
        let m = man | 0x800000u;
        let shift = u32(14 - half_exp);
        var half_man = m >> shift;
        let round_bit = 1u << (shift - 1u);
        // Round up when the first dropped bit is set and either a later dropped bit or the
        // kept lsb is set (ties to even). The carry into the exponent field is correct.
        if ((m & round_bit) != 0u && (m & (3u * round_bit - 1u)) != 0u) { half_man += 1u; }
        return sign | half_man;
    }
    let bits = sign | (u32(half_exp) << 10u) | (man >> 13u);
    // Same rule with 13 dropped bits; a carry out of the mantissa bumps the exponent, and out of
    // exponent 30 gives 0x7c00 = inf.
    if ((man & 0x1000u) != 0u && (man & 0x2fffu) != 0u) { return bits + 1u; }
    return bits;
}

// f16 bits (low 16) → f32 bits, exact.
fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let exp = (h >> 10u) & 0x1fu;
    let man = h & 0x3ffu;
    if (exp == 0x1fu) {
        if (man == 0u) { return sign | 0x7f800000u; }
        return sign | 0x7fc00000u | (man << 13u);
    }
    if (exp == 0u) {
        if (man == 0u) { return sign; }
        // Subnormal man · 2^-24 with its leading one at bit q: 1.f · 2^(q-24), f32 exponent
        // field q - 24 + 127.
        let q = 31u - countLeadingZeros(man);
        return sign | ((q + 103u) << 23u) | ((man << (23u - q)) & 0x7fffffu);
    }
    return sign | ((exp + 112u) << 23u) | (man << 13u);
}

// Four f32 → four f16 in two words (elements 0, 1 in the first word, low half first), rounded as
// f32_to_f16_bits rounds.
fn f16x4_from_f32(v: vec4<f32>) -> vec2<u32> {
    return vec2<u32>(f32_to_f16_bits(bitcast<u32>(v.x)) | (f32_to_f16_bits(bitcast<u32>(v.y)) << 16u),
                     f32_to_f16_bits(bitcast<u32>(v.z)) | (f32_to_f16_bits(bitcast<u32>(v.w)) << 16u));
}

// Four f16 in two words → f32, exact.
fn f32x4_from_f16(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
