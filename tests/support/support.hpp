#pragma once

// Umbrella header for the test helpers in tests/support/.
