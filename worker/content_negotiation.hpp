// Reading Accept and Accept-Encoding with their q-values (RFC 9110 section 12.5).
#pragma once

#include <string>
#include <string_view>

namespace usersd {

// The q-value the header gives `value` (e.g. "text/html" or "gzip"): an exact match wins over a
// wildcard ("text/*", "*/*", "*"); 0 when not listed and no wildcard matches.
double quality_of(std::string_view header, std::string_view value);

// Accept-Encoding rewritten to list only the codings the client accepts (q > 0), so that
// "gzip;q=0" means no gzip. httplib looks for coding names as substrings and ignores q-values.
std::string accepted_encodings(std::string_view header);

}  // namespace usersd
