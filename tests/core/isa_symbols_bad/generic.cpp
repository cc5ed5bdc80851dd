#include "shared.hpp"
int from_generic_file(int x) { return shared_inline(x); }
