// CRC-64 with the ISO polynomial, as Go's hash/crc64 computes it with crc64.MakeTable(crc64.ISO): the per-file
// checksum stored in Docker's tar-split metadata. Slicing by 8 (eight table lookups per 8 input bytes), which
// runs at a few GB/s; tables are built once on first use (thread-safe static initialisation).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace gd {

class Crc64Iso {
 public:
  // Go's crc64.Update(crc, table, p): the running CRC of the bytes so far (0 for none).
  static uint64_t Update(uint64_t crc, const unsigned char* p, size_t n) {
    const Tables& t = Get();
    crc = ~crc;
    while (n >= 8) {
      uint64_t v;
      std::memcpy(&v, p, 8);  // little-endian host (x86-64, aarch64): byte 0 is the low byte
      crc ^= v;
      crc = t.s[7][crc & 0xff] ^ t.s[6][(crc >> 8) & 0xff] ^ t.s[5][(crc >> 16) & 0xff] ^
            t.s[4][(crc >> 24) & 0xff] ^ t.s[3][(crc >> 32) & 0xff] ^ t.s[2][(crc >> 40) & 0xff] ^
            t.s[1][(crc >> 48) & 0xff] ^ t.s[0][crc >> 56];
      p += 8;
      n -= 8;
    }
    while (n-- > 0) crc = t.s[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
  }

 private:
  struct Tables {
    std::array<std::array<uint64_t, 256>, 8> s;
    Tables() {
      const uint64_t poly = 0xD800000000000000ULL;  // reversed x^64 + x^4 + x^3 + x + 1
      for (unsigned i = 0; i < 256; i++) {
        uint64_t c = i;
        for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        s[0][i] = c;
      }
      for (unsigned i = 0; i < 256; i++) {
        for (int k = 1; k < 8; k++) s[k][i] = s[0][s[k - 1][i] & 0xff] ^ (s[k - 1][i] >> 8);
      }
    }
  };
  static const Tables& Get() {
    static const Tables t;
    return t;
  }
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Crc64Iso::Update assumes a little-endian host");

}  // namespace gd
