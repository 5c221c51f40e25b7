// Feature probes: which program types, map types, helpers and attach modes this kernel supports.
#pragma once

#include <napi.h>

namespace mesh {
Napi::Object InitProbe(Napi::Env env, Napi::Object exports);
}
