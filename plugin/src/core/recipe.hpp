// The pad records the plugin keeps in its state, and the few recipe fields it reads.
#pragma once

#include <string>
#include <vector>

namespace dd {

// The raw text of the first value stored under "key" in a JSON object text (a string comes back
// unquoted and unescaped, a number as written); empty when there is none. Enough for the flat
// fields of the companion's recipe (seed, category, model_hash, steps, sampler...).
std::string jsonField(const std::string& json, const std::string& key);

struct PadRecord {
    int note = -1;
    std::string path;    // the file it played
    std::string recipe;  // the companion's JSON recipe of that file
};

// "dd-plugin-pads 1" then one line per pad: note <TAB> path <TAB> recipe
std::string encodePads(const std::vector<PadRecord>& pads);
// false (and `error` says why) when the text is not such a state; records with bad notes are refused
bool decodePads(const std::string& text, std::vector<PadRecord>& pads, std::string& error);

struct PadSpec {
    int note = -1;
    std::string category;
};
// "36 38 42 46" (default categories) or "36=kick 60=perc" (own ones), separated by spaces or commas;
// false + `error` naming the bad item. An empty text means the default grid.
bool parseNotes(const std::string& text, std::vector<PadSpec>& pads, std::string& error);
std::string formatNotes(const std::vector<PadSpec>& pads);

// the default pad map: GM drum notes -> the shipped default model's categories ("" = not mapped)
const char* defaultCategory(int note) noexcept;
// the grid the plugin stocks by default (notes 36..51), most used pads first
const std::vector<int>& defaultPads();

}  // namespace dd
