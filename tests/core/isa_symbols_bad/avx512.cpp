#include "shared.hpp"
int from_isa_file(int x) { return shared_inline(x); }
