// STUB: filled in by its owner.
#include "common/bounded-path.h"
