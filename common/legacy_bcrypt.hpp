// Verification of bcrypt hashes ("$2a$", "$2b$", "$2y$") left by the Node.js service, through the system's
// libxcrypt. usersd never creates bcrypt hashes: a legacy hash is verified once and replaced by Argon2id.
#pragma once

#include <string_view>

namespace usersd {

// Costs outside this range are refused: the old service used 10, and a stored cost of 31 would let one
// corrupt record pin a CPU for hours on every login attempt.
inline constexpr int kBcryptMinCost = 4;
inline constexpr int kBcryptMaxCost = 16;

// True when `hash` is a well-formed bcrypt string ($2a$/$2b$/$2y$, two-digit cost in range, 53 chars of
// the bcrypt alphabet) that bcrypt_verify can check.
bool is_bcrypt_hash(std::string_view hash);

// Recomputes the hash of `password` with libxcrypt (crypt_rn) and compares it in constant time.
// False for a malformed hash or a password containing NUL (which C-string bcrypt would silently truncate).
bool bcrypt_verify(std::string_view hash, std::string_view password);

}  // namespace usersd
