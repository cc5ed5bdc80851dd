// A deliberately wrong pattern for the isa_symbols check to catch: a plain inline function
// called from an ISA-specific file and from a generic one (both get a weak copy).
#pragma once
inline __attribute__((noinline)) int shared_inline(int x) { return x * 3 + 1; }
