#include "recipe.hpp"

#include <cstdlib>
#include <sstream>

namespace dd {

std::string jsonField(const std::string& json, const std::string& key) {
    const std::string quoted = "\"" + key + "\"";
    size_t at = 0;
    while ((at = json.find(quoted, at)) != std::string::npos) {
        size_t i = at + quoted.size();
        while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
        if (i >= json.size() || json[i] != ':') {  // the text of a value, not a key
            at = i;
            continue;
        }
        ++i;
        while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
        if (i >= json.size()) return "";
        if (json[i] == '"') {
            std::string out;
            for (++i; i < json.size() && json[i] != '"'; ++i) {
                if (json[i] == '\\' && i + 1 < json.size()) {
                    const char c = json[++i];
                    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
                } else {
                    out += json[i];
                }
            }
            return out;
        }
        size_t end = i;
        while (end < json.size() && json[end] != ',' && json[end] != '}' && json[end] != ']') ++end;
        std::string raw = json.substr(i, end - i);
        while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\n')) raw.pop_back();
        return raw;
    }
    return "";
}

static std::string oneLine(const std::string& s) {
    std::string out = s;
    for (char& c : out) {
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    }
    return out;
}

std::string encodePads(const std::vector<PadRecord>& pads) {
    std::string out = "dd-plugin-pads 1\n";
    for (const PadRecord& p : pads) {
        if (p.note < 0 || p.note > 127 || p.path.empty()) continue;
        out += std::to_string(p.note) + "\t" + oneLine(p.path) + "\t" + oneLine(p.recipe) + "\n";
    }
    return out;
}

bool decodePads(const std::string& text, std::vector<PadRecord>& pads, std::string& error) {
    pads.clear();
    if (text.empty()) return true;  // no pads recorded yet
    std::istringstream in(text);
    std::string line;
    if (!std::getline(in, line) || line != "dd-plugin-pads 1") {
        error = "pad state must start with 'dd-plugin-pads 1', got '" + line.substr(0, 40) + "'";
        return false;
    }
    int number = 1;
    while (std::getline(in, line)) {
        ++number;
        if (line.empty()) continue;
        const size_t tab1 = line.find('\t');
        const size_t tab2 = tab1 == std::string::npos ? std::string::npos : line.find('\t', tab1 + 1);
        if (tab2 == std::string::npos) {
            error = "pad state line " + std::to_string(number) + " needs note<TAB>path<TAB>recipe";
            return false;
        }
        const std::string note = line.substr(0, tab1);
        char* end = nullptr;
        const long n = std::strtol(note.c_str(), &end, 10);
        if (note.empty() || *end != '\0' || n < 0 || n > 127) {
            error = "pad state line " + std::to_string(number) + ": note must be 0..127, got '" + note + "'";
            return false;
        }
        PadRecord rec;
        rec.note = static_cast<int>(n);
        rec.path = line.substr(tab1 + 1, tab2 - tab1 - 1);
        rec.recipe = line.substr(tab2 + 1);
        pads.push_back(rec);
    }
    return true;
}

bool parseNotes(const std::string& text, std::vector<PadSpec>& pads, std::string& error) {
    std::vector<PadSpec> out;
    std::string item;
    std::istringstream in(text);
    while (in >> item) {
        for (size_t k = 0; k < item.size(); ++k) {
            if (item[k] == ',') item[k] = ' ';
        }
        std::istringstream parts(item);
        std::string one;
        while (parts >> one) {
            const size_t eq = one.find('=');
            const std::string number = one.substr(0, eq);
            char* end = nullptr;
            const long n = std::strtol(number.c_str(), &end, 10);
            if (number.empty() || *end != '\0' || n < 0 || n > 127) {
                error = "notes: '" + one + "' is not a note number 0..127 (optionally =category)";
                return false;
            }
            PadSpec spec;
            spec.note = static_cast<int>(n);
            spec.category = eq == std::string::npos ? defaultCategory(spec.note) : one.substr(eq + 1);
            if (spec.category.empty()) {
                error = "notes: note " + number + " has no default category; give one, e.g. " + number + "=perc";
                return false;
            }
            for (const PadSpec& seen : out) {
                if (seen.note == spec.note) {
                    error = "notes: note " + number + " is listed twice";
                    return false;
                }
            }
            out.push_back(spec);
        }
    }
    if (out.empty()) {
        for (int note : defaultPads()) out.push_back(PadSpec{note, defaultCategory(note)});
    }
    pads.swap(out);
    return true;
}

std::string formatNotes(const std::vector<PadSpec>& pads) {
    std::string out;
    for (const PadSpec& p : pads) {
        if (!out.empty()) out += ' ';
        out += std::to_string(p.note);
        if (p.category != defaultCategory(p.note)) out += "=" + p.category;
    }
    return out;
}

const char* defaultCategory(int note) noexcept {
    switch (note) {
    case 35: case 36: return "kick";
    case 38: case 40: return "snare";
    case 39: return "clap";
    case 42: case 44: return "closed_hat";
    case 46: case 49: case 51: case 52: case 53: case 55: case 57: case 59: return "open_hat";
    case 41: case 43: case 45: case 47: case 48: case 50: return "tom";
    case 37: case 54: case 56: case 58: return "perc";
    default: return (note >= 60 && note <= 81) ? "perc" : "";
    }
}

const std::vector<int>& defaultPads() {
    static const std::vector<int> pads = {36, 38, 42, 46, 39, 37, 40, 41, 43, 44, 45, 47, 48, 49, 50, 51};
    return pads;
}

}  // namespace dd
